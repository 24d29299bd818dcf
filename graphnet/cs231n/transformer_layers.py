"""The course's `transformer_layers` module (assignment 3, Transformer_Captioning, 2021 to
2024 editions): PositionalEncoding and MultiHeadAttention, taking numpy arrays and built
as graphs (graphnet.models.transformer). Their `dropout=` is PyTorch's, as in the
course's module: the probability of dropping a unit."""

from ..models.transformer import MultiHeadAttention, PositionalEncoding

__all__ = ["PositionalEncoding", "MultiHeadAttention"]
