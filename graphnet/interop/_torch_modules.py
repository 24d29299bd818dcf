"""The torch.nn modules that `to_torch` places where a gate depends on train/eval mode,
and the functions it calls for the sequence gates.
Imported only by the converters (this module imports torch)."""

import math

import torch
import torch.nn.functional as F


class BatchNorm(torch.nn.Module):
    """graphnet's batchnorm and spatial_batchnorm: F.batch_norm with the node's running
    averages as buffers, gamma and beta passed in (they are the graph's params, with the
    graph's names). graphnet's momentum keeps the old average (running = momentum *
    running + (1 - momentum) * batch); torch's momentum is the other share."""

    def __init__(self, running_mean, running_var, eps: float, momentum: float):
        super().__init__()
        self.register_buffer("running_mean", running_mean)
        self.register_buffer("running_var", running_var)
        self.eps, self.momentum = eps, momentum

    def forward(self, x, gamma, beta):
        return F.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            gamma,
            beta,
            self.training,
            1.0 - self.momentum,
            self.eps,
        )

    def extra_repr(self):
        return f"eps={self.eps}, momentum={self.momentum} (graphnet's: the share kept)"


# ----- the sequence gates (graphnet.gates.sequence) as torch code ----------------------
# The course's conventions: weights (in, out), one bias, the LSTM's gate blocks in the
# order i, f, o, g (torch.nn.LSTM's are i, f, g, o).


def rnn_step(x, prev_h, Wx, Wh, b):
    return torch.tanh(x @ Wx + prev_h @ Wh + b)


def _lstm_cell(x, prev_h, prev_c, Wx, Wh, b):
    i, f, o, g = (x @ Wx + prev_h @ Wh + b).chunk(4, dim=1)
    next_c = torch.sigmoid(f) * prev_c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(next_c), next_c


def lstm_step(x, prev_h, prev_c, Wx, Wh, b):
    """next_h and next_c stacked, (2, N, H), as graphnet's lstm_step gate outputs them."""
    return torch.stack(_lstm_cell(x, prev_h, prev_c, Wx, Wh, b))


def _every_step(x, h0, step):
    states, state = [], (h0, torch.zeros_like(h0))
    for t in range(x.shape[1]):
        state = step(x[:, t], *state)
        states.append(state[0])
    return torch.stack(states, dim=1) if states else x.new_zeros(x.shape[0], 0, h0.shape[1])


def rnn(x, h0, Wx, Wh, b):
    """Every hidden state (N, T, H) of a tanh RNN over x (N, T, D) from h0."""
    return _every_step(x, h0, lambda x_t, h, c: (rnn_step(x_t, h, Wx, Wh, b), c))


def lstm(x, h0, Wx, Wh, b):
    """Every hidden state (N, T, H) of an LSTM over x (N, T, D) from h0 and c = 0."""
    return _every_step(x, h0, lambda x_t, h, c: _lstm_cell(x_t, h, c, Wx, Wh, b))


def word_embedding(x, W):
    return F.embedding(x, W)


def temporal_affine(x, w, b):
    return x @ w + b


def temporal_softmax_loss(x, y, mask):
    """Cross-entropy where mask is nonzero, summed over the steps, averaged over N."""
    per_step = F.cross_entropy(x.flatten(0, 1), y.flatten(), reduction="none")
    return (per_step * (mask.flatten() != 0)).sum() / max(x.shape[0], 1)


def attention(q, k, v, mask=None):
    """softmax(q kᵀ / √d) v, where mask is nonzero; as graphnet's gate (and unlike
    F.scaled_dot_product_attention, which gives NaN), a query that may attend to no key
    gets zero weights."""
    scale = 1 / math.sqrt(q.shape[-1]) if q.shape[-1] else 1.0
    scores = q @ k.transpose(-2, -1) * scale
    if mask is None:
        return torch.softmax(scores, dim=-1) @ v
    weights = torch.softmax(scores.masked_fill(mask == 0, float("-inf")), dim=-1)
    return weights.nan_to_num(0.0) @ v
