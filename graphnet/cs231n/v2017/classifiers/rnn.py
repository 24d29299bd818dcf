"""The course's `classifiers.rnn` module, 2017 edition: CaptioningRNN (graphnet.models,
built as graphs), and, as the course's star import brings them, the rnn_layers functions."""

from ....models import CaptioningRNN
from .. import rnn_layers as _rnn_layers
from ..rnn_layers import *  # noqa: F401,F403

__all__ = ["CaptioningRNN", *_rnn_layers.__all__]
