"""The course package of Stanford CS231n's 2025 edition, for what it changed: assignment
3's transformer files (Transformer_Captioning, with its Vision Transformer part).

A 2025 notebook's import lines run on graphnet when `cs231n` becomes
`graphnet.cs231n.v2025`:

    from graphnet.cs231n.v2025.transformer_layers import *
    from graphnet.cs231n.v2025.classifiers.transformer import CaptioningTransformer
    from graphnet.cs231n.v2025.classifiers.transformer import VisionTransformer
    from graphnet.cs231n.v2025.captioning_solver_transformer import CaptioningSolverTransformer
    from graphnet.cs231n.v2025.classification_solver_vit import ClassificationSolverViT

The 2025 edition renamed the decoder layer's modules (cross_attn, ffn.fc1, ffn.fc2,
norm_self, norm_cross, norm_ffn; a GELU feedforward, FeedForwardNetwork) and added
PatchEmbedding, TransformerEncoderLayer and VisionTransformer; its names clash with the
2021-2024 ones in graphnet.cs231n, hence this package. The other modules are the same in
every edition: use graphnet.cs231n's (gradient_check is here too, as the notebook imports
it).
"""
