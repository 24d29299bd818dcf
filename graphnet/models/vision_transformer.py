"""The 2025 edition of the course's transformer files (CS231n assignment 3,
Transformer_Captioning, its ViT part): FeedForwardNetwork, PatchEmbedding and the
VisionTransformer classifier, built as graphs of graphnet's gates like the layers of
graphnet.models.transformer (whose attention, encoder layer and parameter layout they
share), taking and returning numpy arrays:

    PatchEmbedding      images (N, C, H, W) cut into (H/p)·(W/p) patches of p x p
                        pixels, row by row, each flattened channel first (C, p, p) as
                        the course's reshape and permute do: a reshape to
                        (N, C, H/p, p, W/p, p), a transpose to (N, H/p, W/p, C, p, p), a
                        reshape to (N, patches, C·p·p), then "proj", an nn.Linear
    VisionTransformer   patch embedding, + the sinusoid positional encoding (dropout),
                        num_layers encoder layers (post-norm, GELU feedforward), the mean
                        over the patches, "head" to the class scores

The course's ViT starts in training mode, as a torch module (dropout on); `.eval()`
turns it off. `model.loss(X, y)` is graphnet's classifier contract (the Solver's), with
the course's nn.CrossEntropyLoss (the mean over the batch).
"""

from typing import Any, Dict, Optional

import numpy as np

from ..core.graph import Graph
from ..core.node import Node
from ..errors import GraphError
from .classifiers import GraphModel
from .transformer import (
    LAYOUTS,
    Sizes,
    TorchModes,
    _add_positions,
    _check_memory,
    _checked_sizes,
    _draw_params,
    _feedforward,
    _join,
    _Layer,
    _layer_params,
    _linear,
    _linear_params,
    _positive,
    _transformer_layer,
    positional_encoding,
)

__all__ = ["FeedForwardNetwork", "PatchEmbedding", "VisionTransformer"]

#: The 2025 edition's layer names: "ffn.fc1", "norm_self", ...
LAYOUT = LAYOUTS[2025]


class FeedForwardNetwork(_Layer):
    """FeedForwardNetwork(embed_dim, ffn_dim, dropout=0.1), the 2025 edition's:
    fc2(dropout(gelu(fc1(x)))) on x (N, T, D); params fc1.{weight,bias} (ffn_dim, D),
    fc2 (D, ffn_dim), nn.Linear's default initialisation from numpy's random state."""

    def __init__(
        self, embed_dim: int, ffn_dim: int, dropout: float = 0.1, *, dtype: Any = np.float32
    ) -> None:
        super().__init__(dtype)
        where = "FeedForwardNetwork"
        D, _, dropout = _checked_sizes(embed_dim, 1, dropout, where)
        F = _positive(where, "ffn_dim", ffn_dim)
        self.embed_dim = D
        specs = [*_linear_params("fc1", D, F), *_linear_params("fc2", F, D)]
        _check_memory([spec[1] for spec in specs], where)
        g = self.graph
        _draw_params(g, specs, small_normal=False)
        x = g.input("x", shape=(None, None, D))
        # The module's own names: fc1, gelu, dropout, fc2 (no "ffn." prefix).
        layout = LAYOUT._replace(fc1="fc1", fc2="fc2", ffn_dropout="dropout")
        _feedforward(g, "", x, dropout, layout, out="out")

    def __call__(self, x: Any) -> np.ndarray:
        return self._run({"x": self._sequence(x, "x", self.embed_dim)})

    forward = __call__


class _PatchGrid:
    """The sizes of a patch embedding: image side, patch side, channels, embedding, and
    the patches, checked (the patch side must divide the image side)."""

    def __init__(
        self, where: str, img_size: Any, patch_size: Any, in_channels: Any, embed_dim: Any
    ) -> None:
        self.img_size = _positive(where, "img_size", img_size)
        self.patch_size = _positive(where, "patch_size", patch_size)
        self.in_channels = _positive(where, "in_channels", in_channels)
        self.embed_dim = _positive(where, "embed_dim", embed_dim)
        if self.img_size % self.patch_size:
            raise ValueError(
                f"{where}: patch_size={self.patch_size} must divide img_size="
                f"{self.img_size} (the patches tile the image)"
            )
        self.side = self.img_size // self.patch_size
        self.num_patches = self.side**2
        self.patch_dim = self.patch_size**2 * self.in_channels

    @property
    def image_shape(self) -> tuple:
        return (self.in_channels, self.img_size, self.img_size)

    def params(self, name: str) -> list:
        return _linear_params(_join(name, "proj"), self.patch_dim, self.embed_dim)

    def build(self, g: Graph, name: str, images: Node, out: Optional[str] = None) -> Node:
        """The patch embeddings (N, patches, embed_dim) of images (N, C, H, W), the last
        node named `out` (default: the projection's name)."""
        C, P, p = self.in_channels, self.side, self.patch_size
        grid = g.reshape(images, (-1, C, P, p, P, p), name=_join(name, "grid"))
        patches = g.transpose(grid, (0, 2, 4, 1, 3, 5), name=_join(name, "patches"))
        flat = g.reshape(patches, (-1, self.num_patches, self.patch_dim), name=_join(name, "flat"))
        return _linear(g, flat, _join(name, "proj"), node=out)


class PatchEmbedding(_Layer):
    """PatchEmbedding(img_size, patch_size, in_channels=3, embed_dim=128), the 2025
    edition's: images (N, in_channels, img_size, img_size) to patch embeddings
    (N, (img_size / patch_size)², embed_dim); param proj (an nn.Linear from the
    in_channels·patch_size² numbers of a patch, nn.Linear's default initialisation)."""

    def __init__(
        self,
        img_size: int,
        patch_size: int,
        in_channels: int = 3,
        embed_dim: int = 128,
        *,
        dtype: Any = np.float32,
    ) -> None:
        super().__init__(dtype)
        grid = self._grid = _PatchGrid(
            "PatchEmbedding", img_size, patch_size, in_channels, embed_dim
        )
        self.img_size, self.patch_size = grid.img_size, grid.patch_size
        self.in_channels, self.embed_dim = grid.in_channels, grid.embed_dim
        self.num_patches, self.patch_dim = grid.num_patches, grid.patch_dim
        specs = grid.params("")
        _check_memory([spec[1] for spec in specs], "PatchEmbedding")
        g = self.graph
        _draw_params(g, specs, small_normal=False)
        images = g.input("x", shape=(None, *grid.image_shape))
        grid.build(g, "", images, out="out")

    def __call__(self, x: Any) -> np.ndarray:
        return self._run({"x": _images(x, self._grid.image_shape, self)})

    forward = __call__


def _images(x: Any, shape: tuple, layer: Any) -> np.ndarray:
    array = np.asarray(x)
    if array.dtype.kind not in "fiu" or array.shape[1:] != shape or not array.shape[0]:
        raise GraphError(
            f"{type(layer).__name__}: images must be a non-empty array of numbers "
            f"(N, {', '.join(map(str, shape))}), got {array.dtype} {array.shape}"
        )
    return array.astype(layer.dtype, copy=False)


class VisionTransformer(TorchModes, GraphModel):
    """VisionTransformer(img_size=32, patch_size=8, in_channels=3, embed_dim=128,
    num_layers=6, num_heads=4, dim_feedforward=256, num_classes=10, dropout=0.1), the
    2025 edition's ViT: patch embedding, positional encoding, num_layers encoder layers,
    the mean over the patches, and a linear head to num_classes scores.

    Params, named, shaped and ordered as the course's named_parameters(), initialised as
    its _init_weights does (N(0, 0.02) weights, zero biases, norms at 1 and 0, from
    numpy's random state): patch_embed.proj.weight (embed_dim, C·p²), .bias, per layer i
    transformer.layers.i.self_attn.{key,query,value,proj}.{weight,bias},
    ...ffn.fc1 (dim_feedforward, embed_dim), ...ffn.fc2, ...norm_self, ...norm_ffn, and
    head.weight (num_classes, embed_dim), head.bias.

    model(X) (forward) gives the scores (N, num_classes) of images X (N, C, H, W) in the
    model's mode; model.loss(X, y) the mean cross-entropy and every gradient (training
    mode), model.loss(X) the scores in eval mode, as graphnet's Solver expects. The
    graph: input "X", nodes "patch_embed.proj", "positional_encoding", the layers' under
    "transformer.layers.i.", "pooled", "scores", "data_loss" and "loss". Keyword only:
    dtype (float32 by default).
    """

    def __init__(
        self,
        img_size: int = 32,
        patch_size: int = 8,
        in_channels: int = 3,
        embed_dim: int = 128,
        num_layers: int = 6,
        num_heads: int = 4,
        dim_feedforward: int = 256,
        num_classes: int = 10,
        dropout: float = 0.1,
        *,
        dtype: Any = np.float32,
    ) -> None:
        where = "VisionTransformer"
        grid = _PatchGrid(where, img_size, patch_size, in_channels, embed_dim)
        E, H, p = _checked_sizes(embed_dim, num_heads, dropout, where)
        if E % 2:
            raise ValueError(
                f"{where}: embed_dim must be even (the positional encoding's sine and "
                f"cosine pairs), got {E}"
            )
        config: Dict[str, Any] = dict(
            img_size=grid.img_size,
            patch_size=grid.patch_size,
            in_channels=grid.in_channels,
            embed_dim=E,
            num_layers=_positive(where, "num_layers", num_layers),
            num_heads=H,
            dim_feedforward=_positive(where, "dim_feedforward", dim_feedforward),
            num_classes=_positive(where, "num_classes", num_classes),
            dropout=p,
            dtype=np.dtype(dtype).name,
        )
        super().__init__(config, 0.0, dtype)
        self._grid = grid
        self.num_classes = config["num_classes"]
        specs = [
            *grid.params("patch_embed"),
            *(
                spec
                for i in range(config["num_layers"])
                for spec in _layer_params(
                    f"transformer.layers.{i}", E, config["dim_feedforward"], LAYOUT, decoder=False
                )
            ),
            *_linear_params("head", E, config["num_classes"]),
        ]
        table = (grid.num_patches, E)
        _check_memory([spec[1] for spec in specs] + [table], where)
        self._positions = positional_encoding(*table)
        _draw_params(self.graph, specs, small_normal=True)
        # graphnet's L2 term (model.reg, 0 by default: the course's ViT has none; its
        # notebook's weight decay is the optimiser's) covers the Linears' weights.
        self._weights = [spec[0] for spec in specs if spec[2] == "linear.weight"]
        self._finish(grid.image_shape)

    def _build(self, X: Node) -> Node:
        g, c = self.graph, self.config
        x = self._grid.build(g, "patch_embed", X)
        rows = g.const(self._positions, name="positional_encoding.pe")
        x = _add_positions(g, x, rows, c["dropout"], out="positional_encoding")
        sizes = Sizes(c["embed_dim"], c["num_heads"], c["dropout"])
        for i in range(c["num_layers"]):
            x = _transformer_layer(g, f"transformer.layers.{i}", x, None, None, sizes, LAYOUT)
        pooled = g.mean(x, axis=1, name="pooled")
        return _linear(g, pooled, "head", node="scores")

    def forward(self, X: Any) -> np.ndarray:
        """The scores (N, num_classes) of images X (N, C, H, W), in the model's mode
        (dropout on in training mode, as the course's forward)."""
        X = self.check_input(X, method="forward")
        with self.graph.lock:
            return self.graph.run("scores", {"X": X})

    __call__ = forward
