"""The course's `classifiers.transformer` module, 2025 edition: CaptioningTransformer (its
decoder layers with the 2025 names and GELU) and VisionTransformer, built as graphs, and,
as the course's star import brings them, the 2025 transformer_layers classes."""

from ....models import transformer as _transformer
from ....models.vision_transformer import VisionTransformer
from .. import transformer_layers as _transformer_layers
from ..transformer_layers import *  # noqa: F401,F403

__all__ = ["CaptioningTransformer", "VisionTransformer", *_transformer_layers.__all__]


class CaptioningTransformer(_transformer.CaptioningTransformer):
    """CaptioningTransformer(word_to_idx, input_dim, wordvec_dim, num_heads=4,
    num_layers=2, max_length=50), the 2025 edition's: as in 2021-2024, its decoder layers'
    params named transformer.layers.i.{self_attn, cross_attn, ffn.fc1, ffn.fc2,
    norm_self, norm_cross, norm_ffn} and their feedforward GELU. A checkpoint rebuilds
    it as graphnet.models.CaptioningTransformer with edition=2025."""

    edition = 2025
