"""The course's `transformer_layers` module, 2025 edition: PositionalEncoding and
MultiHeadAttention (as in 2021-2024), FeedForwardNetwork (fc1, GELU, dropout, fc2), the
decoder layer with the 2025 names (self_attn, cross_attn, ffn, norm_self, norm_cross,
norm_ffn), PatchEmbedding and TransformerEncoderLayer; numpy arrays in and out, built as
graphs (graphnet.models.transformer, graphnet.models.vision_transformer). `dropout=` is
PyTorch's: the probability of dropping a unit."""

from ...models import transformer as _transformer
from ...models.transformer import MultiHeadAttention, PositionalEncoding, TransformerEncoderLayer
from ...models.vision_transformer import FeedForwardNetwork, PatchEmbedding

__all__ = [
    "PositionalEncoding",
    "MultiHeadAttention",
    "FeedForwardNetwork",
    "TransformerDecoderLayer",
    "PatchEmbedding",
    "TransformerEncoderLayer",
]


class TransformerDecoderLayer(_transformer.TransformerDecoderLayer):
    """TransformerDecoderLayer(input_dim, num_heads, dim_feedforward=2048, dropout=0.1),
    the 2025 edition's: params self_attn, cross_attn, ffn.fc1, ffn.fc2, norm_self,
    norm_cross, norm_ffn (in that order), a GELU feedforward; layer(tgt, memory,
    tgt_mask=None) as in 2021-2024."""

    edition = 2025
