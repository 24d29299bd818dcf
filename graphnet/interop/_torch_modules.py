"""The torch.nn modules that `to_torch` places where a gate depends on train/eval mode,
and the functions it calls for the sequence gates.
Imported only by the converters (this module imports torch)."""

import math

import torch
import torch.nn.functional as F

from ._recurrent import block_order


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


def _torch_weights(Wx, Wh, b, blocks):
    """torch's (w_ih, w_hh, b_ih, b_hh) from the course's Wx, Wh, b: (out, in) matrices,
    the LSTM's blocks in torch's order, and no recurrent bias."""
    if blocks > 1:
        H = Wh.shape[0]
        order = block_order("course", "torch")
        Wx, Wh, b = (
            torch.cat([w[..., k * H : (k + 1) * H] for k in order], dim=-1) for w in (Wx, Wh, b)
        )
    return [Wx.t(), Wh.t(), b, torch.zeros_like(b)]


def rnn(x, h0, Wx, Wh, b):
    """Every hidden state (N, T, H) of a tanh RNN over x (N, T, D) from h0 (torch's RNN)."""
    if x.shape[1] == 0:  # torch's RNN takes at least one step
        return x.new_zeros(x.shape[0], 0, h0.shape[1])
    out, _ = torch.rnn_tanh(
        x, h0[None], _torch_weights(Wx, Wh, b, 1), True, 1, 0.0, False, False, True
    )
    return out


def lstm(x, h0, Wx, Wh, b):
    """Every hidden state (N, T, H) of an LSTM over x (N, T, D) from h0 and c = 0
    (torch's LSTM)."""
    if x.shape[1] == 0:
        return x.new_zeros(x.shape[0], 0, h0.shape[1])
    state = [h0[None], torch.zeros_like(h0[None])]
    out, _, _ = torch.lstm(x, state, _torch_weights(Wx, Wh, b, 4), True, 1, 0.0, False, False, True)
    return out


def word_embedding(x, W):
    return F.embedding(x, W)


def temporal_affine(x, w, b):
    return x @ w + b


def temporal_softmax_loss(x, y, mask):
    """Cross-entropy where mask is nonzero, summed over the steps, averaged over N."""
    per_step = F.cross_entropy(x.flatten(0, 1), y.flatten(), reduction="none")
    return (per_step * (mask.flatten() != 0)).sum() / max(x.shape[0], 1)


def attention(q, k, v, mask=None):
    """softmax(q kᵀ / √d) v, where mask is nonzero; as graphnet's gate and
    F.scaled_dot_product_attention (unlike a softmax over masked_fill(-inf), which gives
    NaN), a query that may attend to no key gets zero weights."""
    scale = 1 / math.sqrt(q.shape[-1]) if q.shape[-1] else 1.0
    scores = q @ k.transpose(-2, -1) * scale
    if mask is None:
        return torch.softmax(scores, dim=-1) @ v
    weights = torch.softmax(scores.masked_fill(mask == 0, float("-inf")), dim=-1)
    return weights.nan_to_num(0.0) @ v
