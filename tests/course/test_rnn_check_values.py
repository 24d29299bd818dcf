"""The check values of CS231n assignment 3 (RNN_Captioning.ipynb, LSTM_Captioning.ipynb,
Transformer_Captioning.ipynb), run against graphnet.rnn_layers as the notebooks run them:
same inputs, same random seeds, same order of random draws, same tolerances or tighter.
"""

import numpy as np
import pytest

from graphnet.gradient_check import (
    eval_numerical_gradient,
    eval_numerical_gradient_array,
    rel_error,
)
from graphnet.layers import affine_forward
from graphnet.rnn_layers import (
    attention_forward,
    lstm_backward,
    lstm_forward,
    lstm_step_backward,
    lstm_step_forward,
    rnn_backward,
    rnn_forward,
    rnn_step_backward,
    rnn_step_forward,
    temporal_affine_backward,
    temporal_affine_forward,
    temporal_softmax_loss,
    word_embedding_backward,
    word_embedding_forward,
)

pytestmark = pytest.mark.usefixtures("one_kernel_thread")


def linspace(low, high, *shape):
    return np.linspace(low, high, num=int(np.prod(shape))).reshape(shape)


# ------------------------------------------------------------------ forward values


def test_rnn_step_forward():
    N, D, H = 3, 10, 4
    next_h, _ = rnn_step_forward(
        linspace(-0.4, 0.7, N, D),
        linspace(-0.2, 0.5, N, H),
        linspace(-0.1, 0.9, D, H),
        linspace(-0.3, 0.7, H, H),
        linspace(-0.2, 0.4, H),
    )
    expected_next_h = np.asarray(
        [
            [-0.58172089, -0.50182032, -0.41232771, -0.31410098],
            [0.66854692, 0.79562378, 0.87755553, 0.92795967],
            [0.97934501, 0.99144213, 0.99646691, 0.99854353],
        ]
    )
    assert rel_error(expected_next_h, next_h) < 1e-8  # the notebook: 6.3e-9


def test_rnn_forward():
    N, T, D, H = 2, 3, 4, 5
    h, _ = rnn_forward(
        linspace(-0.1, 0.3, N, T, D),
        linspace(-0.3, 0.1, N, H),
        linspace(-0.2, 0.4, D, H),
        linspace(-0.4, 0.1, H, H),
        linspace(-0.7, 0.1, H),
    )
    expected_h = np.asarray(
        [
            [
                [-0.42070749, -0.27279261, -0.11074945, 0.05740409, 0.22236251],
                [-0.39525808, -0.22554661, -0.0409454, 0.14649412, 0.32397316],
                [-0.42305111, -0.24223728, -0.04287027, 0.15997045, 0.35014525],
            ],
            [
                [-0.55857474, -0.39065825, -0.19198182, 0.02378408, 0.23735671],
                [-0.27150199, -0.07088804, 0.13562939, 0.33099728, 0.50158768],
                [-0.51014825, -0.30524429, -0.06755202, 0.17806392, 0.40333043],
            ],
        ]
    )
    assert rel_error(expected_h, h) < 1e-7  # the notebook: 7.7e-8


def test_word_embedding_forward():
    out, _ = word_embedding_forward(np.asarray([[0, 3, 1, 2], [2, 1, 0, 3]]), linspace(0, 1, 5, 3))
    expected_out = np.asarray(
        [
            [
                [0.0, 0.07142857, 0.14285714],
                [0.64285714, 0.71428571, 0.78571429],
                [0.21428571, 0.28571429, 0.35714286],
                [0.42857143, 0.5, 0.57142857],
            ],
            [
                [0.42857143, 0.5, 0.57142857],
                [0.21428571, 0.28571429, 0.35714286],
                [0.0, 0.07142857, 0.14285714],
                [0.64285714, 0.71428571, 0.78571429],
            ],
        ]
    )
    assert rel_error(expected_out, out) < 2e-8  # the notebook: 1.0e-8


def test_lstm_step_forward():
    N, D, H = 3, 4, 5
    next_h, next_c, _ = lstm_step_forward(
        linspace(-0.4, 1.2, N, D),
        linspace(-0.3, 0.7, N, H),
        linspace(-0.4, 0.9, N, H),
        linspace(-2.1, 1.3, D, 4 * H),
        linspace(-0.7, 2.2, H, 4 * H),
        linspace(0.3, 0.7, 4 * H),
    )
    expected_next_h = np.asarray(
        [
            [0.24635157, 0.28610883, 0.32240467, 0.35525807, 0.38474904],
            [0.49223563, 0.55611431, 0.61507696, 0.66844003, 0.7159181],
            [0.56735664, 0.66310127, 0.74419266, 0.80889665, 0.858299],
        ]
    )
    expected_next_c = np.asarray(
        [
            [0.32986176, 0.39145139, 0.451556, 0.51014116, 0.56717407],
            [0.66382255, 0.76674007, 0.87195994, 0.97902709, 1.08751345],
            [0.74192008, 0.90592151, 1.07717006, 1.25120233, 1.42395676],
        ]
    )
    assert rel_error(expected_next_h, next_h) < 1e-8  # the notebook: 5.7e-9
    assert rel_error(expected_next_c, next_c) < 1e-8  # the notebook: 5.8e-9


def test_lstm_forward():
    N, D, H, T = 2, 5, 4, 3
    h, _ = lstm_forward(
        linspace(-0.4, 0.6, N, T, D),
        linspace(-0.4, 0.8, N, H),
        linspace(-0.2, 0.9, D, 4 * H),
        linspace(-0.3, 0.6, H, 4 * H),
        linspace(0.2, 0.7, 4 * H),
    )
    expected_h = np.asarray(
        [
            [
                [0.01764008, 0.01823233, 0.01882671, 0.0194232],
                [0.11287491, 0.12146228, 0.13018446, 0.13902939],
                [0.31358768, 0.33338627, 0.35304453, 0.37250975],
            ],
            [
                [0.45767879, 0.4761092, 0.4936887, 0.51041945],
                [0.6704845, 0.69350089, 0.71486014, 0.7346449],
                [0.81733511, 0.83677871, 0.85403753, 0.86935314],
            ],
        ]
    )
    assert rel_error(expected_h, h) < 1e-7  # the notebook: 8.6e-8


# ------------------------------------------------------------------ gradient checks


def numeric_errors(forward, args, dout, grads):
    """rel_error of each analytic gradient against the notebook's numerical one."""
    return [
        rel_error(eval_numerical_gradient_array(lambda _: forward(*args)[0], a, dout), g)
        for a, g in zip(args, grads)
    ]


def test_rnn_step_backward_cell():
    np.random.seed(231)
    N, D, H = 4, 5, 6
    args = [
        np.random.randn(N, D),
        np.random.randn(N, H),
        np.random.randn(D, H),
        np.random.randn(H, H),
        np.random.randn(H),
    ]
    out, cache = rnn_step_forward(*args)
    dnext_h = np.random.randn(*out.shape)
    errors = numeric_errors(rnn_step_forward, args, dnext_h, rnn_step_backward(dnext_h, cache))
    assert max(errors) < 1e-8, errors  # the notebook: 7.1e-10 at most


def test_rnn_backward_cell():
    np.random.seed(231)
    N, D, T, H = 2, 3, 10, 5
    args = [
        np.random.randn(N, T, D),
        np.random.randn(N, H),
        np.random.randn(D, H),
        np.random.randn(H, H),
        np.random.randn(H),
    ]
    out, cache = rnn_forward(*args)
    dout = np.random.randn(*out.shape)
    errors = numeric_errors(rnn_forward, args, dout, rnn_backward(dout, cache))
    assert max(errors) < 1e-6, errors  # the notebook: 1.3e-7 at most (dWh)


def test_word_embedding_backward_cell():
    np.random.seed(231)
    N, T, V, D = 50, 3, 5, 6
    x = np.random.randint(V, size=(N, T))
    W = np.random.randn(V, D)
    out, cache = word_embedding_forward(x, W)
    dout = np.random.randn(*out.shape)
    dW = word_embedding_backward(dout, cache)
    dW_num = eval_numerical_gradient_array(lambda W: word_embedding_forward(x, W)[0], W, dout)
    assert rel_error(dW, dW_num) < 1e-10  # the notebook: 3.3e-12


def temporal_affine_cell():
    """The temporal affine cell: seeds 231 and leaves the random state where the
    temporal softmax cell, which does not reseed, finds it."""
    np.random.seed(231)
    N, T, D, M = 2, 3, 4, 5
    args = [np.random.randn(N, T, D), np.random.randn(D, M), np.random.randn(M)]
    out, cache = temporal_affine_forward(*args)
    dout = np.random.randn(*out.shape)
    return numeric_errors(
        temporal_affine_forward, args, dout, temporal_affine_backward(dout, cache)
    )


def test_temporal_affine_backward_cell():
    errors = temporal_affine_cell()
    assert max(errors) < 1e-8, errors  # the notebook: 1.8e-10 at most


def test_temporal_softmax_loss_cell_reproduces_the_printed_losses():
    temporal_affine_cell()

    def check_loss(N, T, V, p):
        x = 0.001 * np.random.randn(N, T, V)
        y = np.random.randint(V, size=(N, T))
        mask = np.random.rand(N, T) <= p
        return temporal_softmax_loss(x, y, mask)[0]

    # "Should be about 2.3", "about 23", "about 2.3": the values the notebook printed.
    assert check_loss(100, 1, 10, 1.0) == pytest.approx(2.3027781774290146, rel=1e-12)
    assert check_loss(100, 10, 10, 1.0) == pytest.approx(23.025985953127226, rel=1e-12)
    assert check_loss(5000, 10, 10, 0.1) == pytest.approx(2.2643611790293394, rel=1e-12)

    N, T, V = 7, 8, 9
    x = np.random.randn(N, T, V)
    y = np.random.randint(V, size=(N, T))
    mask = np.random.rand(N, T) > 0.5
    loss, dx = temporal_softmax_loss(x, y, mask, verbose=False)
    dx_num = eval_numerical_gradient(
        lambda x: temporal_softmax_loss(x, y, mask)[0], x, verbose=False
    )
    assert rel_error(dx, dx_num) < 1e-7  # the notebook: 2.6e-8


def test_lstm_step_backward_cell():
    np.random.seed(231)
    N, D, H = 4, 5, 6
    x, prev_h, prev_c = np.random.randn(N, D), np.random.randn(N, H), np.random.randn(N, H)
    Wx, Wh, b = np.random.randn(D, 4 * H), np.random.randn(H, 4 * H), np.random.randn(4 * H)
    args = [x, prev_h, prev_c, Wx, Wh, b]
    next_h, next_c, cache = lstm_step_forward(*args)
    dnext_h, dnext_c = np.random.randn(*next_h.shape), np.random.randn(*next_c.shape)
    grads = lstm_step_backward(dnext_h, dnext_c, cache)
    errors = []
    for a, g in zip(args, grads):
        num_h = eval_numerical_gradient_array(lambda _: lstm_step_forward(*args)[0], a, dnext_h)
        num_c = eval_numerical_gradient_array(lambda _: lstm_step_forward(*args)[1], a, dnext_c)
        errors.append(rel_error(num_h + num_c, g))
    assert max(errors) < 1e-6, errors  # the notebook: 9.8e-8 at most (dWh)


def test_lstm_backward_cell():
    np.random.seed(231)
    N, D, T, H = 2, 3, 10, 6
    args = [
        np.random.randn(N, T, D),
        np.random.randn(N, H),
        np.random.randn(D, 4 * H),
        np.random.randn(H, 4 * H),
        np.random.randn(4 * H),
    ]
    out, cache = lstm_forward(*args)
    dout = np.random.randn(*out.shape)
    errors = numeric_errors(lstm_forward, args, dout, lstm_backward(dout, cache))
    assert max(errors) < 1e-5, errors  # the notebook: 2.3e-6 at most (dWh)


# ------------------------------------------------------------------ the captioning loss


@pytest.mark.parametrize(
    "cell_type, feature_range, expected_loss",
    [
        ("rnn", (-1.5, 0.3), 9.83235591003),  # RNN_Captioning.ipynb
        ("lstm", (-0.5, 1.7), 9.82445935443),  # LSTM_Captioning.ipynb
    ],
)
def test_captioning_loss_composed_from_the_layers(cell_type, feature_range, expected_loss):
    """The notebooks' CaptioningRNN loss check, with the model's forward pass written out:
    every parameter set to linspace(-1.4, 1.3) over its own size."""
    N, D, W, H = 10, 20, 30, 40
    word_to_idx = {"<NULL>": 0, "cat": 2, "dog": 3}
    V, T = len(word_to_idx), 13
    gates = 4 if cell_type == "lstm" else 1
    params = {
        name: linspace(-1.4, 1.3, *shape)
        for name, shape in {
            "W_embed": (V, W),
            "W_proj": (D, H),
            "b_proj": (H,),
            "Wx": (W, gates * H),
            "Wh": (H, gates * H),
            "b": (gates * H,),
            "W_vocab": (H, V),
            "b_vocab": (V,),
        }.items()
    }
    features = linspace(*feature_range, N, D)
    captions = (np.arange(N * T) % V).reshape(N, T)

    captions_in, captions_out = captions[:, :-1], captions[:, 1:]
    h0, _ = affine_forward(features, params["W_proj"], params["b_proj"])
    words, _ = word_embedding_forward(captions_in, params["W_embed"])
    recurrent = lstm_forward if cell_type == "lstm" else rnn_forward
    h, _ = recurrent(words, h0, params["Wx"], params["Wh"], params["b"])
    scores, _ = temporal_affine_forward(h, params["W_vocab"], params["b_vocab"])
    loss, _ = temporal_softmax_loss(scores, captions_out, captions_out != word_to_idx["<NULL>"])
    assert loss == pytest.approx(expected_loss, abs=1e-10)  # the notebooks: 2.6e-12, 2.3e-12


# ------------------------------------------------------------------ attention


@pytest.mark.torch
def test_multihead_self_attention_cell():
    """Transformer_Captioning.ipynb (2022 edition on): a two-head self-attention layer on
    torch's seed 231, built here from attention_forward and the layer's four nn.Linear.

    The notebook ran the layer in training mode, so its expected output went through
    dropout (p = 0.1) on the attention weights, with masks from the random stream of the
    PyTorch of its day, which later versions no longer draw. The masks below are the
    only ones (of 2^6 per query) that reproduce its rows: query 0 lost head 1's weight on
    key 0, query 2 head 0's weight on key 0, query 1 nothing."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(231)
    E, heads, S = 8, 2, 3
    layers = {name: torch.nn.Linear(E, E).double() for name in ("key", "query", "value", "proj")}
    data = torch.randn(1, S, E).double().numpy()

    def project(name, x):
        y = x @ layers[name].weight.detach().numpy().T + layers[name].bias.detach().numpy()
        return y.reshape(1, S, heads, E // heads).transpose(0, 2, 1, 3)  # (N, heads, S, E/h)

    values = project("value", data)
    _, cache = attention_forward(project("query", data), project("key", data), values)
    kept = np.ones((1, heads, S, S))
    kept[0, 1, 0, 0] = kept[0, 0, 2, 0] = 0
    out = ((cache.weights * kept / 0.9) @ values).transpose(0, 2, 1, 3).reshape(1, S, E)
    out = out @ layers["proj"].weight.detach().numpy().T + layers["proj"].bias.detach().numpy()

    expected_self_attn_output = np.asarray(
        [
            [
                [-0.2494, 0.1396, 0.4323, -0.2411, -0.1547, 0.2329, -0.1936, -0.1444],
                [-0.1997, 0.1746, 0.7377, -0.3549, -0.2657, 0.2693, -0.2541, -0.2476],
                [-0.0625, 0.1503, 0.7572, -0.3974, -0.1681, 0.2168, -0.2478, -0.3038],
            ]
        ]
    )
    assert np.abs(out - expected_self_attn_output).max() < 5e-5  # printed to 4 decimals


def test_the_course_import_paths():
    from graphnet import rnn_layers
    from graphnet.cs231n import rnn_layers as latest
    from graphnet.cs231n.v2017 import rnn_layers as v2017

    for module in (latest, v2017):
        assert module.__all__ == rnn_layers.__all__
        assert all(
            getattr(module, name) is getattr(rnn_layers, name) for name in rnn_layers.__all__
        )
