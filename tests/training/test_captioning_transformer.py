"""CaptioningTransformer and the course's transformer layers (graphnet.models.transformer,
at the course's paths cs231n.transformer_layers and cs231n.classifiers.transformer), and
CaptioningSolverTransformer: the Transformer_Captioning notebook's check values, gradients
against numerical float64 ones and against PyTorch, masks and padding, odd sizes, refused
arguments, checkpoints, the drawing, and overfitting 50 number captions."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphnet as gn
from graphnet.cs231n.captioning_solver_transformer import CaptioningSolverTransformer
from graphnet.cs231n.classifiers.transformer import (
    CaptioningTransformer,
    MultiHeadAttention,
    PositionalEncoding,
    TransformerDecoderLayer,
)
from graphnet.data import load_number_captions
from graphnet.models.transformer import positional_encoding

from .test_captioning import assert_says_the_captions_back

SMALL_WORDS = {"<NULL>": 0, "cat": 2, "dog": 3}  # the notebook's: V = 3, "dog" never used
WORDS = {"<NULL>": 0, "<START>": 1, "<END>": 2, "cat": 3, "dog": 4}


def small_model(dtype=np.float64, **kwargs):
    np.random.seed(0)
    args = dict(num_heads=2, num_layers=2, max_length=8, dim_feedforward=12, dtype=dtype)
    return CaptioningTransformer(WORDS, 5, 6, **{**args, **kwargs})


def captions_with_padding():
    """<START> first, <NULL> in the middle as well as at the end (the course's check
    captions hold it anywhere)."""
    return np.array([[1, 3, 0, 4, 2, 0], [1, 4, 4, 2, 0, 0], [1, 0, 3, 3, 4, 2]])


# ------------------------------------------------------------------ the notebook's checks


def test_the_notebook_model_check_rows_that_no_dropout_touched():
    """Transformer_Captioning.ipynb: every param np.linspace(-1.4, 1.3) in
    named_parameters order, scores printed to 4 decimals. The notebook ran the model in
    training mode: its rows went through dropout masks from PyTorch's random stream. The
    rows it printed equal to the eval-mode scores, (2, 0) and (2, 2), are the rows that no
    mask changed; graphnet's eval-mode scores give them."""
    N, D, W, T = 4, 20, 30, 3
    V = len(SMALL_WORDS)
    model = CaptioningTransformer(
        SMALL_WORDS,
        input_dim=D,
        wordvec_dim=W,
        num_heads=2,
        num_layers=2,
        max_length=30,
        dtype=np.float64,
    )
    names = [name for name, _ in model.named_parameters()]
    assert names[:3] == ["visual_projection.weight", "visual_projection.bias", "embedding.weight"]
    assert names[3:5] == [
        "transformer.layers.0.self_attn.key.weight",
        "transformer.layers.0.self_attn.key.bias",
    ]
    assert names[-2:] == ["output.weight", "output.bias"] and len(names) == 3 + 2 * 26 + 2
    for name, value in model.named_parameters():
        model.params[name] = np.linspace(-1.4, 1.3, num=value.size).reshape(*value.shape)
    features = np.linspace(-1.5, 0.3, num=(N * D)).reshape(N, D)
    captions = (np.arange(N * T) % V).reshape(N, T)
    scores = model.eval()(features, captions)
    assert scores.shape == (N, T, V)
    expected_unchanged_row = np.array(
        [-17.2172, 4.7701, 26.7574]
    )  # the notebook's rows (2, 0), (2, 2)
    for row in (scores[2, 0], scores[2, 2]):
        assert np.abs(row - expected_unchanged_row).max() < 5e-5


def test_the_notebook_positional_encoding_check():
    """The notebook's cell: PositionalEncoding(6) on torch.randn(1, 2, 6) after
    torch.manual_seed(231) (the numbers below), in training mode: (x + pe) / 0.9 where
    dropout kept a unit, -0.0 where it dropped one (entry (0, 4))."""
    data = np.array(
        [
            [
                [
                    -1.1105817556381226,
                    0.001412116107530892,
                    1.5280239582061768,
                    -1.0778337717056274,
                    -0.6963548064231873,
                    0.14548544585704803,
                ],
                [
                    -0.028988288715481758,
                    -0.970564603805542,
                    0.45174017548561096,
                    -0.2669468820095062,
                    1.135820746421814,
                    0.5330578088760376,
                ],
            ]
        ]
    )
    expected_pe_output = np.asarray(
        [
            [
                [-1.2340, 1.1127, 1.6978, -0.0865, -0.0000, 1.2728],
                [0.9028, -0.4781, 0.5535, 0.8133, 1.2644, 1.7034],
            ]
        ]
    )
    pe = PositionalEncoding(6, dtype=np.float64)
    kept = expected_pe_output != 0
    assert np.abs(pe.eval()(data)[kept] / 0.9 - expected_pe_output[kept]).max() < 5e-5
    np.random.seed(0)
    trained = pe.train()(data)  # each unit 0 or the kept value
    assert np.all((trained == 0) | np.isclose(trained, pe.eval()(data) / 0.9, rtol=1e-12))


def test_the_positional_encoding_table_is_the_courses_formula():
    table = positional_encoding(50, 8)
    t, j = 7, 3
    assert table[t, 2 * j] == pytest.approx(math.sin(t * 10000 ** (-2 * j / 8)), abs=1e-15)
    assert table[t, 2 * j + 1] == pytest.approx(math.cos(t * 10000 ** (-2 * j / 8)), abs=1e-15)
    np.testing.assert_array_equal(table[0], [0, 1] * 4)
    assert PositionalEncoding(8, max_len=50).pe.shape == (1, 50, 8)


def naive_attention(params, query, key, value, mask, num_heads):
    """The course's multi-head attention with loops over samples, heads and queries (the
    independent reference: no matmul over stacks, no -1e30). A query allowed no key
    attends to nothing: zero weights."""
    N, S, E = query.shape
    d = E // num_heads

    def linear(x, part):
        return x @ params[f"{part}.weight"].T + params[f"{part}.bias"]

    q, k, v = linear(query, "query"), linear(key, "key"), linear(value, "value")
    joined = np.zeros((N, S, E))
    for n in range(N):
        for h in range(num_heads):
            cols = slice(h * d, (h + 1) * d)
            for s in range(S):
                allowed = np.flatnonzero(mask[s])
                if not allowed.size:
                    continue
                scores = np.array([q[n, s, cols] @ k[n, t, cols] for t in allowed]) / math.sqrt(d)
                weights = np.exp(scores - scores.max())
                weights /= weights.sum()
                joined[n, s, cols] = sum(w * v[n, t, cols] for w, t in zip(weights, allowed))
    return linear(joined, "proj")


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 3),
    queries=st.integers(1, 4),
    keys=st.integers(1, 4),
    head_size=st.integers(1, 3),
    num_heads=st.integers(1, 3),
    every_query_some_key=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_multi_head_attention_at_random_shapes_against_naive_loops(
    batch, queries, keys, head_size, num_heads, every_query_some_key, seed
):
    """Random sizes (one query, one key, one feature per head among them), self- and
    cross-attention, a random mask, allowing each query at least one key or not; eval
    mode."""
    E = head_size * num_heads
    np.random.seed(seed)
    attn = MultiHeadAttention(E, num_heads, dtype=np.float64).eval()
    rng = np.random.default_rng(seed)
    query = rng.standard_normal((batch, queries, E))
    key = rng.standard_normal((batch, keys, E))
    mask = rng.random((queries, keys)) < 0.5
    if every_query_some_key:
        mask[np.arange(queries), rng.integers(0, keys, queries)] = True
    out = attn(query, key, key, attn_mask=mask)
    reference = naive_attention(attn.params, query, key, key, mask, num_heads)
    np.testing.assert_allclose(out, reference, rtol=1e-10, atol=1e-12)
    own = np.ones((queries, queries), bool)
    np.testing.assert_allclose(
        attn(query, query, query),
        naive_attention(attn.params, query, query, query, own, num_heads),
        rtol=1e-10,
        atol=1e-12,
    )


# ------------------------------------------------------------------ gradients


def numerical_gradient(f, x, entries, h=1e-6):
    grads = []
    for index in entries:
        old = x[index]
        x[index] = old + h
        plus = f()
        x[index] = old - h
        minus = f()
        x[index] = old
        grads.append((plus - minus) / (2 * h))
    return np.array(grads)


@pytest.mark.parametrize("mode", ["eval", "no dropout"])
def test_every_param_gradient_against_numerical_float64(mode):
    """Five entries of every param, with <NULL> words inside the captions: the gradients
    of the loss against centred differences. (The <NULL> word's vector is read but gets
    no gradient, as the course's nn.Embedding(padding_idx=...): tested below.)"""
    model = small_model(dropout=0.1 if mode == "eval" else 0.0)
    if mode == "eval":
        model.eval()
    rng = np.random.default_rng(1)
    features = rng.standard_normal((3, 5))
    captions = captions_with_padding()
    _, grads = model.loss(features, captions)
    grads = {k: v.copy() for k, v in grads.items()}
    for name, value in model.params.items():
        first = value.shape[-1] if name == "embedding.weight" else 0  # past the <NULL> row
        picks = first + rng.permutation(value.size - first)[:5]
        flat = [np.unravel_index(i, value.shape) for i in picks]
        numeric = numerical_gradient(lambda: model.loss(features, captions)[0], value, flat)
        analytic = np.array([grads[name][i] for i in flat])
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9, err_msg=name)


def test_the_null_word_vector_gets_no_gradient_but_is_used():
    """nn.Embedding(padding_idx=<NULL>): the row is read, and never learns."""
    model = small_model()
    features = np.ones((3, 5))
    loss, grads = model.loss(features, captions_with_padding())
    np.testing.assert_array_equal(grads["embedding.weight"][0], 0)
    assert np.abs(grads["embedding.weight"][3]).sum() > 0
    model.params["embedding.weight"][0] += 1.0
    assert model.eval().loss(features, captions_with_padding())[0] != pytest.approx(loss)


def test_the_loss_is_the_courses_masked_mean_over_every_step():
    """The course's transformer_temporal_softmax_loss: cross-entropy where the target is not
    <NULL>, divided by N * T (masked steps count as 0)."""
    model = small_model().eval()
    features = np.random.default_rng(2).standard_normal((3, 5))
    captions = captions_with_padding()
    loss, _ = model.loss(features, captions)
    scores = model(features, captions[:, :-1])
    targets = captions[:, 1:]
    shifted = scores - scores.max(axis=2, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=2, keepdims=True))
    picked = np.take_along_axis(log_probs, targets[:, :, None], axis=2)[:, :, 0]
    assert loss == pytest.approx(-(picked * (targets != 0)).mean(), rel=1e-12)


def test_a_future_word_changes_no_earlier_score():
    """The causal mask: step t sees the words up to t."""
    model = small_model().eval()
    features = np.ones((1, 5))
    scores = model(features, np.array([[1, 3, 4, 3]]))
    changed = model(features, np.array([[1, 3, 3, 4]]))
    np.testing.assert_array_equal(scores[:, :2], changed[:, :2])
    assert not np.allclose(scores[:, 2:], changed[:, 2:])


def test_float32_by_default_and_close_to_float64():
    model32 = small_model(dtype=np.float32)
    model64 = small_model(dtype=np.float64)
    assert all(v.dtype == np.float32 for v in model32.params.values())
    features = np.random.default_rng(3).standard_normal((3, 5))
    scores32 = model32.eval()(features, captions_with_padding())
    assert scores32.dtype == np.float32
    np.testing.assert_allclose(
        scores32, model64.eval()(features, captions_with_padding()), atol=1e-5
    )
    loss32, grads32 = model32.loss(features, captions_with_padding())
    loss64, grads64 = model64.loss(features, captions_with_padding())
    assert loss32 == pytest.approx(loss64, rel=1e-5)
    for name in grads64:
        np.testing.assert_allclose(grads32[name], grads64[name], atol=2e-5, err_msg=name)


def test_one_step_captions_and_one_head():
    model = small_model(num_heads=1)
    features = np.ones((2, 5))
    assert model.eval()(features, np.array([[1], [3]])).shape == (2, 1, len(WORDS))
    loss, grads = model.loss(features, np.array([[1, 3], [1, 0]]))  # T = 1
    assert np.isfinite(loss) and set(grads) == set(model.params)


def test_training_mode_drops_and_eval_mode_repeats():
    model = small_model()
    features = np.ones((2, 5))
    captions = np.array([[1, 3, 4], [1, 4, 3]])
    assert model.training
    np.random.seed(5)
    first, second = model(features, captions), model(features, captions)
    assert not np.array_equal(first, second)  # new masks each call
    model.eval()
    np.testing.assert_array_equal(model(features, captions), model(features, captions))


def assert_the_same_bits_on_one_to_three_threads(run):
    """run() -> (loss, grads) gives the same bits on 1, 2 and 3 kernel threads."""
    from graphnet.kernels import _C

    before = _C.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            _C.set_num_threads(threads)
            loss, grads = run()
            results.append((loss, {k: v.copy() for k, v in grads.items()}))
    finally:
        _C.set_num_threads(before)
    for loss, grads in results[1:]:
        assert loss == results[0][0]
        for name, grad in grads.items():
            np.testing.assert_array_equal(grad, results[0][1][name], err_msg=name)


def test_the_same_bits_on_one_to_three_kernel_threads():
    features = np.random.default_rng(10).standard_normal((96, 5))  # enough rows to split
    captions = np.tile(captions_with_padding(), (32, 1))

    def run():
        model = small_model(dtype=np.float32)
        np.random.seed(11)  # the dropout nodes' streams start from it: the same masks
        return model.loss(features, captions)

    assert_the_same_bits_on_one_to_three_threads(run)


def test_sample_is_greedy_decoding_from_start():
    model = small_model().eval()
    features = np.random.default_rng(4).standard_normal((2, 5))
    sampled = model.sample(features, max_length=5)
    assert sampled.shape == (2, 5) and sampled.dtype == np.int32
    # Each word is the argmax of the last step's scores given the words before it.
    words = np.full((2, 1), 1)
    for t in range(5):
        np.testing.assert_array_equal(sampled[:, t], model(features, words)[:, -1].argmax(axis=1))
        words = np.concatenate([words, sampled[:, t : t + 1]], axis=1)


# ------------------------------------------------------------------ refused arguments


@pytest.mark.parametrize(
    "kwargs, named",
    [
        (dict(num_heads=4), "num_heads=4 must divide"),
        (dict(num_heads=0), "num_heads must be a positive integer"),
        (dict(num_layers=0), "num_layers"),
        (dict(max_length=-1), "max_length"),
        (dict(dropout=1.0), "dropout"),
        (dict(dim_feedforward=2.5), "dim_feedforward"),
        (dict(wordvec_dim=5, num_heads=1), "wordvec_dim must be even"),
    ],
)
def test_bad_model_arguments_are_refused_by_name(kwargs, named):
    args = dict(num_heads=2, num_layers=2, max_length=8, dim_feedforward=12)
    wordvec = kwargs.pop("wordvec_dim", 6)
    with pytest.raises(ValueError, match=named):
        CaptioningTransformer(WORDS, 5, wordvec, **{**args, **kwargs})
    with pytest.raises(ValueError, match="<NULL>"):
        CaptioningTransformer({"cat": 0}, 5, 6)


def test_bad_inputs_name_the_input_and_the_shapes():
    model = small_model()
    features = np.ones((2, 5))
    with pytest.raises(gn.GraphError, match=r"captions must be integer word indices"):
        model.loss(features, np.ones((2, 1), int))  # no target
    with pytest.raises(gn.GraphError, match="max_length=8"):
        model.loss(features, np.ones((2, 10), int))
    with pytest.raises(gn.GraphError, match=r"outside the vocabulary \[0, 5\)"):
        model.loss(features, np.array([[1, 5], [1, 2]]))
    for call, method in ((model.loss, "loss"), (model.forward, "forward")):
        with pytest.raises(gn.GraphError, match=rf"^CaptioningTransformer\.{method}: features"):
            call(np.ones((2, 4)), np.ones((2, 3), int))
    with pytest.raises(gn.GraphError, match=r"^CaptioningTransformer\.sample: features"):
        model.sample(np.ones((2, 4)), max_length=4)
    with pytest.raises(gn.GraphError, match="max_length=9 is longer"):
        model.sample(features, max_length=9)
    with pytest.raises(gn.GraphError, match="<START>"):
        CaptioningTransformer(SMALL_WORDS, 5, 6, num_heads=2).sample(features)


@pytest.mark.parametrize(
    "build",
    [
        lambda: CaptioningTransformer(WORDS, 5, 6, num_heads=2, dim_feedforward=2**40),
        lambda: CaptioningTransformer(WORDS, 2**62, 6, num_heads=2),
        lambda: CaptioningTransformer(WORDS, 5, 6, num_heads=2, max_length=2**62),
        lambda: MultiHeadAttention(2**40, 2),
        lambda: TransformerDecoderLayer(8, 2, dim_feedforward=2**60),
        lambda: PositionalEncoding(8, max_len=2**61),
    ],
)
def test_sizes_beyond_memory_are_refused_before_drawing(build):
    with pytest.raises(ValueError, match="more than this machine's"):
        build()


def test_the_layers_refuse_bad_arguments_and_shapes():
    with pytest.raises(ValueError, match="num_heads=3 must divide the embedding size 8"):
        MultiHeadAttention(8, 3)
    with pytest.raises(ValueError, match="embed_dim must be even"):
        PositionalEncoding(5)
    attn = MultiHeadAttention(8, 2)
    x = np.ones((2, 3, 8))
    with pytest.raises(gn.GraphError, match=r"attention mask must be numbers of shape \(3, 4\)"):
        attn(x, np.ones((2, 4, 8)), np.ones((2, 4, 8)), attn_mask=np.ones((4, 3)))
    with pytest.raises(gn.GraphError, match=r"\(N, length, 8\)"):
        attn(np.ones((2, 3, 7)), x, x)
    with pytest.raises(gn.GraphError, match="max_len=4"):
        PositionalEncoding(8, max_len=4)(np.ones((1, 5, 8)))


# ------------------------------------------------------------------ the graph


def test_the_model_is_a_graph_that_draws_every_node():
    from graphnet import viz

    model = small_model()
    model.loss(np.ones((3, 5)), captions_with_padding())
    g = model.graph
    assert all(n.value is not None for n in g.nodes if n.kind != "const")
    assert g["transformer.layers.1.self_attn.weights"].value.shape == (2, 3, 5, 5)  # (H, N, T, T)
    assert g["transformer.layers.0.multihead_attn.weights"].value.shape == (2, 3, 5, 1)
    assert g["embedding.weight"].grad is not None
    source = viz.draw(g, collapse=False).source
    assert all(f'"{n.name}"' in source or n.name in source for n in g.nodes)


def test_anomaly_mode_sees_only_finite_numbers_and_a_query_allowed_no_key():
    """Masked scores are -1e30, not the course's -inf: anomaly mode runs the model, and
    the weights are the same (exp underflows to 0); a query allowed no key at all gets
    zero weights (the course's -inf: NaN), its output proj's bias, and sends no gradient
    back through its scores."""
    model = small_model()
    with gn.detect_anomaly():
        model.loss(np.ones((3, 5)), captions_with_padding())
    attn = MultiHeadAttention(4, 2, dtype=np.float64).eval()
    x = np.random.default_rng(9).standard_normal((1, 2, 4))
    with gn.detect_anomaly():
        out = attn(x, x, x, attn_mask=np.array([[1, 0], [0, 0]]))
        attn.backward(np.ones_like(out))
    g = attn.graph
    np.testing.assert_array_equal(g["softmax"].value[:, 0, 1], [[0.5, 0.5], [0.5, 0.5]])
    weights = g["weights"].value  # (H, N, S, T)
    np.testing.assert_array_equal(weights[:, 0, 0], [[1, 0], [1, 0]])
    np.testing.assert_array_equal(weights[:, 0, 1], [[0, 0], [0, 0]])
    np.testing.assert_array_equal(out[0, 1], attn.params["proj.bias"])
    np.testing.assert_array_equal(g["scores"].grad[:, 0, 1], 0)


def test_checkpoint_rebuilds_the_model(tmp_path):
    model = small_model()
    gn.save(model, tmp_path / "transformer.npz")
    loaded = gn.load(tmp_path / "transformer.npz")
    assert type(loaded) is CaptioningTransformer and loaded.config == model.config
    features = np.ones((2, 5))
    captions = np.array([[1, 3], [1, 4]])
    np.testing.assert_array_equal(
        loaded.eval()(features, captions), model.eval()(features, captions)
    )


def test_the_decoder_layer_and_attention_layers_backward():
    layer = TransformerDecoderLayer(6, 2, dim_feedforward=10, dtype=np.float64).eval()
    names = [n for n, _ in layer.named_parameters()]
    assert names[0] == "self_attn.key.weight" and names[-1] == "norm3.bias"
    rng = np.random.default_rng(6)
    tgt, memory = rng.standard_normal((2, 3, 6)), rng.standard_normal((2, 2, 6))
    mask = np.tril(np.ones((3, 3)))
    dout = rng.standard_normal((2, 3, 6))
    layer(tgt, memory, mask)
    grads = layer.backward(dout)
    value = layer.params["multihead_attn.value.weight"]
    entries = [(0, 0), (3, 5), (5, 2)]
    numeric = numerical_gradient(lambda: np.sum(layer(tgt, memory, mask) * dout), value, entries)
    np.testing.assert_allclose(
        [grads["multihead_attn.value.weight"][i] for i in entries], numeric, rtol=1e-6
    )
    numeric = numerical_gradient(
        lambda: np.sum(layer(tgt, memory, mask) * dout), tgt, [(0, 2, 1), (1, 0, 4)]
    )
    np.testing.assert_allclose([grads["tgt"][0, 2, 1], grads["tgt"][1, 0, 4]], numeric, rtol=1e-6)


# ------------------------------------------------------------------ PyTorch


def torch_reference(torch, model):
    """The course's architecture written in PyTorch (post-norm decoder layers, dropout
    on the attention weights), loaded with the graphnet model's params by name."""
    nn, F = torch.nn, torch.nn.functional
    c = model.config
    W, H = c["wordvec_dim"], c["num_heads"]

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.key, self.query, self.value, self.proj = (nn.Linear(W, W) for _ in range(4))

        def forward(self, query, key, value, attn_mask=None):
            N, S, _ = query.shape
            T = key.shape[1]
            q = self.query(query).view(N, S, H, W // H).transpose(1, 2)
            k = self.key(key).view(N, T, H, W // H).transpose(1, 2)
            v = self.value(value).view(N, T, H, W // H).transpose(1, 2)
            scores = q @ k.transpose(2, 3) / math.sqrt(W // H)
            if attn_mask is not None:
                scores = scores.masked_fill(attn_mask == 0, float("-inf"))
            out = torch.softmax(scores, dim=-1) @ v
            return self.proj(out.transpose(1, 2).reshape(N, S, W))

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.self_attn, self.multihead_attn = Attention(), Attention()
            self.linear1 = nn.Linear(W, c["dim_feedforward"])
            self.linear2 = nn.Linear(c["dim_feedforward"], W)
            self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(W) for _ in range(3))

        def forward(self, x, memory, mask):
            x = self.norm1(x + self.self_attn(x, x, x, mask))
            x = self.norm2(x + self.multihead_attn(x, memory, memory))
            return self.norm3(x + self.linear2(F.relu(self.linear1(x))))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.visual_projection = nn.Linear(c["input_dim"], W)
            self.embedding = nn.Embedding(len(c["word_to_idx"]), W, padding_idx=0)
            self.transformer = nn.Module()
            self.transformer.layers = nn.ModuleList(Layer() for _ in range(c["num_layers"]))
            self.output = nn.Linear(W, len(c["word_to_idx"]))

        def forward(self, features, captions):
            T = captions.shape[1]
            pe = torch.tensor(positional_encoding(T, W))
            x = self.embedding(captions) + pe
            memory = self.visual_projection(features).unsqueeze(1)
            mask = torch.tril(torch.ones(T, T))
            for layer in self.transformer.layers:
                x = layer(x, memory, mask)
            return self.output(x)

    reference = Model().double()
    assert [n for n, _ in reference.named_parameters()] == list(model.params)
    with torch.no_grad():
        for name, p in reference.named_parameters():
            p.copy_(torch.tensor(model.params[name]))
    return reference


@pytest.mark.torch
def test_scores_loss_and_every_gradient_equal_pytorchs():
    torch = pytest.importorskip("torch")
    model = small_model().eval()
    reference = torch_reference(torch, model)
    features = np.random.default_rng(7).standard_normal((3, 5))
    captions = captions_with_padding()
    loss, grads = model.loss(features, captions)
    scores = reference(torch.tensor(features), torch.tensor(captions[:, :-1]))
    np.testing.assert_allclose(
        model(features, captions[:, :-1]), scores.detach().numpy(), atol=1e-12
    )
    targets = torch.tensor(captions[:, 1:])
    N, T, V = scores.shape
    # The course's CaptioningSolverTransformer.transformer_temporal_softmax_loss:
    per_step = F_cross_entropy(torch, scores.reshape(N * T, V), targets.reshape(N * T))
    torch_loss = (per_step * (targets.reshape(N * T) != 0)).mean()
    torch_loss.backward()
    assert loss == pytest.approx(torch_loss.item(), rel=1e-12)
    for name, p in reference.named_parameters():
        np.testing.assert_allclose(grads[name], p.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


def F_cross_entropy(torch, scores, targets):
    return torch.nn.functional.cross_entropy(scores, targets, reduction="none")


@pytest.mark.torch
@pytest.mark.parametrize("masked", [False, True])
def test_multi_head_attention_equals_pytorchs_with_and_without_a_mask(masked):
    torch = pytest.importorskip("torch")
    E, H = 8, 2
    attn = MultiHeadAttention(E, H, dtype=np.float64).eval()
    reference = torch.nn.MultiheadAttention(E, H, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        # torch's in_proj stacks query, key, value
        reference.in_proj_weight.copy_(
            torch.tensor(
                np.concatenate([attn.params[f"{p}.weight"] for p in ("query", "key", "value")])
            )
        )
        reference.in_proj_bias.copy_(
            torch.tensor(
                np.concatenate([attn.params[f"{p}.bias"] for p in ("query", "key", "value")])
            )
        )
        reference.out_proj.weight.copy_(torch.tensor(attn.params["proj.weight"]))
        reference.out_proj.bias.copy_(torch.tensor(attn.params["proj.bias"]))
    rng = np.random.default_rng(8)
    query, key = rng.standard_normal((2, 3, E)), rng.standard_normal((2, 5, E))
    mask = rng.random((3, 5)) < 0.6 if masked else None
    if masked:
        mask[:, 0] = True  # every query attends to some key
    ours = attn(query, key, key, attn_mask=mask)
    theirs, _ = reference(
        torch.tensor(query),
        torch.tensor(key),
        torch.tensor(key),
        attn_mask=None if mask is None else torch.tensor(~mask),  # torch's: True = masked out
    )
    np.testing.assert_allclose(ours, theirs.detach().numpy(), atol=1e-13)


ATTENTION_MASKS = {  # (S, T) = (4, 5), True where query s may attend to key t
    "causal": np.tril(np.ones((4, 5), bool)),
    "padding": np.array([[1, 1, 1, 0, 0]] * 4, bool),  # the last two keys are padding
    "rows with no key": np.tril(np.ones((4, 5), bool), -1),  # query 0 sees no key
    "every key masked": np.zeros((4, 5), bool),
}


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", sorted(ATTENTION_MASKS))
def test_masked_attention_equals_torchs_scaled_dot_product_attention(kind, dtype):
    """The course's layer against torch's F.scaled_dot_product_attention (which gives a
    query allowed no key zero weights too): the output and every gradient, float32 and
    float64. torch.nn.MultiheadAttention and the course's masked_fill(-inf) give NaN on
    such a query's row, and ours elsewhere."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    E, H, mask = 6, 2, ATTENTION_MASKS[kind]
    np.random.seed(3)
    attn = MultiHeadAttention(E, H, dtype=dtype).eval()
    rng = np.random.default_rng(4)
    query, key = rng.standard_normal((2, 4, E)), rng.standard_normal((2, 5, E))
    dout = rng.standard_normal((2, 4, E))
    ours = attn(*(a.astype(dtype) for a in (query, key, key)), attn_mask=mask)
    grads = attn.backward(dout.astype(dtype))
    t = {name: torch.tensor(a, requires_grad=True) for name, a in attn.params.items()}
    t_query, t_key = (torch.tensor(a.astype(dtype), requires_grad=True) for a in (query, key))

    def heads(x, part):
        projected = x @ t[f"{part}.weight"].T + t[f"{part}.bias"]
        return projected.reshape(2, -1, H, E // H).transpose(1, 2)

    def attend(scores_to_weights):
        q, k, v = heads(t_query, "query"), heads(t_key, "key"), heads(t_key, "value")
        return scores_to_weights(q, k, v).transpose(1, 2).reshape(2, 4, E)

    def proj(x):
        return x @ t["proj.weight"].T + t["proj.bias"]

    allowed = torch.tensor(mask)
    theirs = proj(attend(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, allowed)))
    theirs.backward(torch.tensor(dout.astype(dtype)))
    tol = dict(rtol=1e-12, atol=1e-13) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(ours, theirs.detach().numpy(), **tol)
    grads["key_in"] = grads["key_in"] + grads.pop("value_in")  # the keys are the values
    for name, grad in [("query_in", t_query.grad), ("key_in", t_key.grad)] + [
        (name, a.grad) for name, a in t.items()
    ]:
        np.testing.assert_allclose(grads[name], grad.numpy(), **tol, err_msg=name)
    no_key = ~mask.any(axis=1)
    with torch.no_grad():

        def masked_fill(q, k, v):
            scores = q @ k.transpose(-1, -2) / math.sqrt(E // H)
            return torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1) @ v

        course = proj(attend(masked_fill)).numpy()
    assert np.isnan(course[:, no_key]).all() and not np.isnan(course[:, ~no_key]).any()
    np.testing.assert_allclose(ours[:, ~no_key], course[:, ~no_key], **tol)
    bias_only = np.broadcast_to(attn.params["proj.bias"], ours[:, no_key].shape)
    np.testing.assert_array_equal(ours[:, no_key], bias_only)


@pytest.mark.parametrize("kind", sorted(ATTENTION_MASKS))
def test_masked_attention_gradients_against_numerical_float64(kind):
    """Every input's and param's gradient of sum(out · dout) against centred differences,
    through masks that leave a query no key (its scores get no gradient: they change
    nothing)."""
    E, H, mask = 6, 3, ATTENTION_MASKS[kind]
    np.random.seed(5)
    attn = MultiHeadAttention(E, H, dtype=np.float64).eval()
    rng = np.random.default_rng(6)
    query, key = rng.standard_normal((2, 4, E)), rng.standard_normal((2, 5, E))
    dout = rng.standard_normal((2, 4, E))
    attn(query, key, key, attn_mask=mask)
    grads = attn.backward(dout)
    grads["key_in"] = grads["key_in"] + grads.pop("value_in")  # the keys are the values
    arrays = {"query_in": query, "key_in": key, **attn.params}
    for name, array in arrays.items():
        entries = [np.unravel_index(i, array.shape) for i in rng.permutation(array.size)[:6]]
        numeric = numerical_gradient(
            lambda: np.sum(attn(query, key, key, attn_mask=mask) * dout), array, entries
        )
        analytic = [grads[name][i] for i in entries]
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9, err_msg=name)


# ------------------------------------------------------------------ training


@pytest.mark.slow
def test_overfits_50_number_captions_and_says_them_back():
    """The notebook's overfitting cell (50 training captions, batch 25, 100 epochs, Adam;
    the notebook: wordvec_dim 256, learning rate 1e-3) on number captions, smaller:
    wordvec_dim 64, a feedforward of 64, learning rate 2e-3 (3 s of one core)."""
    np.random.seed(231)
    data = load_number_captions(num_train=50, num_val=0, num_test=0)
    sizes = dict(wordvec_dim=64, num_heads=2, num_layers=2, max_length=30, dim_feedforward=64)
    model = CaptioningTransformer(data["word_to_idx"], data["train_features"].shape[1], **sizes)
    training = dict(num_epochs=100, batch_size=25, learning_rate=0.002, verbose=False)
    solver = CaptioningSolverTransformer(model, data, idx_to_word=data["idx_to_word"], **training)
    solver.train()
    assert len(solver.loss_history) == 200 and solver.idx_to_word is data["idx_to_word"]
    model.eval()
    loss, _ = model.loss(data["train_features"], data["train_captions"])
    # Averaged over every step, as the course's loss: measured 0.037 (from 3.5).
    assert loss < 0.1, loss
    assert_says_the_captions_back(model, data)


def test_the_solver_trains_with_adam_at_the_learning_rate():
    np.random.seed(0)
    data = load_number_captions(num_train=10, num_val=0, num_test=0)
    model = CaptioningTransformer(
        data["word_to_idx"],
        data["train_features"].shape[1],
        8,
        num_heads=2,
        num_layers=1,
        max_length=10,
        dim_feedforward=8,
    )
    solver = CaptioningSolverTransformer(
        model,
        data,
        data["idx_to_word"],
        learning_rate=0.01,
        batch_size=5,
        num_epochs=2,
        verbose=False,
    )
    assert solver.update_rule_name == "adam"
    solver.train()
    assert len(solver.loss_history) == 4
    assert solver.optim_configs["output.bias"]["learning_rate"] == 0.01
    with pytest.raises(ValueError, match="takes no update_rule="):
        CaptioningSolverTransformer(model, data, data["idx_to_word"], update_rule="sgd")
    with pytest.raises(ValueError, match="Unrecognized arguments"):
        CaptioningSolverTransformer(model, data, data["idx_to_word"], lr=0.1)
