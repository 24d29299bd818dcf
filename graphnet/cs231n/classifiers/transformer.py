"""The course's `classifiers.transformer` module (assignment 3, Transformer_Captioning,
2021 to 2024 editions): CaptioningTransformer and TransformerDecoderLayer
(graphnet.models.transformer, built as graphs), and, as the course's star import brings
them, the transformer_layers classes."""

from ...models.transformer import CaptioningTransformer, TransformerDecoderLayer
from .. import transformer_layers as _transformer_layers
from ..transformer_layers import *  # noqa: F401,F403

__all__ = ["CaptioningTransformer", "TransformerDecoderLayer", *_transformer_layers.__all__]
