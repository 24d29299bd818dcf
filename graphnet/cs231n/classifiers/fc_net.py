"""The course's `classifiers.fc_net` module for the 2018+ editions: TwoLayerNet and
FullyConnectedNet (built as graphnet graphs), and, as the course's star import brings them,
everything of graphnet.cs231n.layer_utils (the layers, fast layers and sandwiches)."""

from typing import Any, Optional, Sequence

import numpy as np

from ... import models
from ...models import TwoLayerNet
from .. import layer_utils as _layer_utils
from ..layer_utils import *  # noqa: F401,F403

__all__ = ["TwoLayerNet", "FullyConnectedNet", *_layer_utils.__all__]


class FullyConnectedNet(models.FullyConnectedNet):
    """[affine - [batchnorm] - relu - [dropout]] x (L - 1) - affine - softmax, with the
    arguments of the 2018+ editions.

    dropout_keep_ratio (2021+), or dropout (its 2018-2020 name): the probability of KEEPING
    a unit, in (0, 1]; 1 (the default) adds no dropout layers. normalization: None or
    'batchnorm' (a batchnorm after every hidden affine). The 2017 edition's use_batchnorm=
    is refused: that edition is graphnet.cs231n.v2017, whose dropout= is the probability of
    dropping a unit. Everything else is graphnet.models.FullyConnectedNet's.
    """

    def __init__(
        self,
        hidden_dims: Sequence[int],
        input_dim: int = 3 * 32 * 32,
        num_classes: int = 10,
        dropout_keep_ratio: float = 1,
        normalization: Optional[str] = None,
        reg: float = 0.0,
        weight_scale: float = 1e-2,
        dtype: Any = np.float32,
        seed: Optional[int] = None,
        *,
        dropout: Optional[float] = None,
        use_batchnorm: Optional[bool] = None,
    ) -> None:
        if use_batchnorm is not None:
            raise TypeError(
                "use_batchnorm= is the 2017 edition's argument; the 2018+ editions "
                "(graphnet.cs231n) take normalization='batchnorm'. For the 2017 "
                "edition import from graphnet.cs231n.v2017"
            )
        if dropout is not None:
            if dropout_keep_ratio not in (1, dropout):
                raise ValueError(
                    f"dropout={dropout!r} and dropout_keep_ratio="
                    f"{dropout_keep_ratio!r} are two names of the probability "
                    "of keeping a unit; pass one"
                )
            dropout_keep_ratio = dropout
        self._setup(
            hidden_dims,
            input_dim,
            num_classes,
            dropout_keep_ratio,
            normalization,
            reg,
            weight_scale,
            dtype,
            seed,
        )
