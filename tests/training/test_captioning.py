"""CaptioningRNN (graphnet.models, at the course's path cs231n.classifiers.rnn) and the
CaptioningSolver: the course's deterministic loss check values, gradient checks in
float64, the loss and gradients at random sizes against naive loops, the graph it is
built as, checkpoints, errors, and overfitting 50 number captions until it says them
back."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphnet as gn
from graphnet.cs231n.captioning_solver import CaptioningSolver
from graphnet.cs231n.classifiers.rnn import CaptioningRNN
from graphnet.data import load_number_captions
from graphnet.data.number_captions import decode_captions
from graphnet.gradient_check import eval_numerical_gradient, rel_error

SMALL_WORDS = {"<NULL>": 0, "cat": 2, "dog": 3}


@pytest.mark.parametrize(
    "cell_type, feature_range, expected_loss",
    [
        ("rnn", (-1.5, 0.3), 9.83235591003),  # RNN_Captioning.ipynb
        ("lstm", (-0.5, 1.7), 9.82445935443),  # LSTM_Captioning.ipynb
    ],
)
def test_the_course_loss_check_values(cell_type, feature_range, expected_loss):
    """The notebooks' cell, as written there: every param linspace(-1.4, 1.3)."""
    N, D, W, H = 10, 20, 30, 40
    V, T = len(SMALL_WORDS), 13
    model = CaptioningRNN(
        SMALL_WORDS, input_dim=D, wordvec_dim=W, hidden_dim=H, cell_type=cell_type, dtype=np.float64
    )
    for k, v in model.params.items():
        model.params[k] = np.linspace(-1.4, 1.3, num=v.size).reshape(*v.shape)
    features = np.linspace(*feature_range, num=(N * D)).reshape(N, D)
    captions = (np.arange(N * T) % V).reshape(N, T)
    loss, grads = model.loss(features, captions)
    assert abs(loss - expected_loss) < 1e-10  # measured 2.6e-12 (rnn), 2.3e-12 (lstm)
    assert set(grads) == {"W_embed", "W_proj", "b_proj", "Wx", "Wh", "b", "W_vocab", "b_vocab"}


@pytest.mark.slow
@pytest.mark.parametrize("cell_type", ["rnn", "lstm"])
def test_gradient_check_of_the_model_as_the_notebook_does_it(cell_type):
    np.random.seed(231)
    batch_size, timesteps, input_dim, wordvec_dim, hidden_dim = 2, 3, 4, 5, 6
    V = len(SMALL_WORDS)
    captions = np.random.randint(V, size=(batch_size, timesteps))
    features = np.random.randn(batch_size, input_dim)
    model = CaptioningRNN(
        SMALL_WORDS,
        input_dim=input_dim,
        wordvec_dim=wordvec_dim,
        hidden_dim=hidden_dim,
        cell_type=cell_type,
        dtype=np.float64,
    )
    loss, grads = model.loss(features, captions)
    for name in sorted(model.params):
        numeric = eval_numerical_gradient(
            lambda _: model.loss(features, captions)[0], model.params[name], verbose=False, h=1e-5
        )
        # The notebook's rel_error divides by |a| + |b| entry by entry: entries of ~1e-5
        # (which keep five digits in centred differences of a loss of ~2) make it ~1e-5
        # for a right gradient. Each entry within 1e-9 of the numerical one, or 1e-6 of
        # itself, says more; a wrong rule is off by 1e-2.
        np.testing.assert_allclose(grads[name], numeric, rtol=1e-6, atol=1e-9, err_msg=name)
        assert rel_error(numeric, grads[name]) < 1e-4, name


def test_the_model_is_a_graph_of_sequence_gates_with_per_step_gradients():
    model = CaptioningRNN(
        SMALL_WORDS, input_dim=4, wordvec_dim=5, hidden_dim=6, cell_type="lstm", dtype=np.float64
    )
    g = model.graph
    assert [n.op for n in g.nodes if n.gate is not None] == [
        "slice",
        "slice",
        "affine",
        "word_embedding",
        "lstm",
        "temporal_affine",
        "temporal_softmax_loss",
    ]
    captions = np.array([[1, 2, 0, 0], [2, 1, 1, 0]])
    model.loss(np.ones((2, 4)), captions)
    h = g["h"]
    per_step = h.gate.hidden_state_grads(h.grad, h.cache)
    assert per_step.shape == (2, 3, 6)
    # A step whose target is <NULL> and all steps after it send the loss nothing.
    np.testing.assert_array_equal(per_step[0, 1:], 0)
    np.testing.assert_array_equal(per_step[1, 2], 0)
    assert np.abs(per_step[1, 1]).min() > 0 and np.abs(per_step[0, 0]).min() > 0
    # The mask says which steps count: the first caption's two padded targets do not.
    np.testing.assert_array_equal(g["mask"].value, [[1, 0, 0], [1, 1, 0]])


def test_float32_by_default_and_the_same_numbers_as_float64():
    np.random.seed(0)
    model32 = CaptioningRNN(SMALL_WORDS, input_dim=4, wordvec_dim=5, hidden_dim=6)
    np.random.seed(0)
    model64 = CaptioningRNN(SMALL_WORDS, input_dim=4, wordvec_dim=5, hidden_dim=6, dtype=np.float64)
    features, captions = np.random.randn(3, 4), np.random.randint(3, size=(3, 5))
    loss32, grads32 = model32.loss(features, captions)
    loss64, grads64 = model64.loss(features, captions)
    assert model32.params["Wx"].dtype == np.float32 and grads32["Wx"].dtype == np.float32
    assert loss32 == pytest.approx(loss64, rel=1e-5)
    for name, grad in grads64.items():
        np.testing.assert_allclose(grads32[name], grad, rtol=1e-3, atol=1e-5)


def test_sample_is_greedy_decoding_with_the_course_step_functions():
    from graphnet.rnn_layers import lstm_step_forward

    np.random.seed(3)
    words = {"<NULL>": 0, "<START>": 1, "<END>": 2, "a": 3, "b": 4}
    model = CaptioningRNN(
        words, input_dim=4, wordvec_dim=5, hidden_dim=6, cell_type="lstm", dtype=np.float64
    )
    for k, v in model.params.items():  # big enough weights that the words vary
        model.params[k] = np.random.randn(*v.shape)
    features = np.random.randn(3, 4)
    p = model.params
    h, c = features @ p["W_proj"] + p["b_proj"], np.zeros((3, 6))
    word, expected = np.full(3, 1), []
    for _ in range(7):
        h, c, _ = lstm_step_forward(p["W_embed"][word], h, c, p["Wx"], p["Wh"], p["b"])
        word = np.argmax(h @ p["W_vocab"] + p["b_vocab"], axis=1)
        expected.append(word)
    sampled = model.sample(features, max_length=7)
    assert sampled.dtype == np.int32 and sampled.shape == (3, 7)
    np.testing.assert_array_equal(sampled, np.stack(expected, axis=1))


def test_checkpoint_rebuilds_the_model(tmp_path):
    np.random.seed(1)
    model = CaptioningRNN(SMALL_WORDS, input_dim=4, wordvec_dim=5, hidden_dim=6, cell_type="lstm")
    gn.save(model, tmp_path / "captioner.npz")
    loaded = gn.load(tmp_path / "captioner.npz")
    assert type(loaded) is CaptioningRNN and loaded.cell_type == "lstm"
    assert loaded.word_to_idx == SMALL_WORDS
    features, captions = np.random.randn(2, 4), np.random.randint(3, size=(2, 4))
    assert loaded.loss(features, captions)[0] == model.loss(features, captions)[0]


def test_bad_input_names_the_input_and_the_shapes():
    model = CaptioningRNN(SMALL_WORDS, input_dim=4, wordvec_dim=5, hidden_dim=6)
    with pytest.raises(gn.GraphError, match=r"captions.*\(2, T \+ 1\).*got float64 \(2, 4\)"):
        model.loss(np.zeros((2, 4)), np.zeros((2, 4)))
    with pytest.raises(gn.GraphError, match=r"from 0 to 7, outside the vocabulary \[0, 3\)"):
        model.loss(np.zeros((2, 4)), np.array([[0, 7], [1, 2]]))
    with pytest.raises(gn.GraphError, match=r"features \(input 'features'\) of shape \(2, 5\)"):
        model.loss(np.zeros((2, 5)), np.zeros((2, 4), dtype=int))
    with pytest.raises(ValueError, match="cell_type"):
        CaptioningRNN(SMALL_WORDS, cell_type="gru")
    with pytest.raises(gn.GraphError, match="<START>"):
        model.sample(np.zeros((1, 4)))
    with_start = CaptioningRNN({**SMALL_WORDS, "<START>": 3}, input_dim=4, wordvec_dim=5)
    with pytest.raises(gn.GraphError, match=r"^CaptioningRNN\.sample: features"):
        with_start.sample(np.zeros((1, 5)))
    with pytest.raises(ValueError, match="train_captions"):
        CaptioningSolver(model, {"X_train": np.zeros((2, 4))})


@pytest.mark.slow
@pytest.mark.parametrize("cell_type", ["rnn", "lstm"])
def test_overfits_50_number_captions_and_says_them_back(cell_type):
    np.random.seed(231)
    data = load_number_captions(num_train=50, num_val=0, num_test=0)
    model = CaptioningRNN(
        data["word_to_idx"],
        input_dim=data["train_features"].shape[1],
        wordvec_dim=64,
        hidden_dim=128,
        cell_type=cell_type,
    )
    solver = CaptioningSolver(
        model,
        data,
        update_rule="adam",
        num_epochs=100,
        batch_size=25,
        optim_config={"learning_rate": 1e-2},
        lr_decay=0.95,
        verbose=False,
    )
    solver.train()
    assert len(solver.loss_history) == 200
    loss, _ = model.loss(data["train_features"], data["train_captions"])
    # Summed over a caption's (up to 5) words: measured 0.08 (rnn), 0.26 (lstm), from 16.
    assert loss < 0.5, loss
    assert_says_the_captions_back(model, data)


def assert_says_the_captions_back(model, data):
    """model.sample gives every training caption, word for word (the CaptioningTransformer's
    overfitting test uses it too)."""
    sampled = model.sample(data["train_features"], max_length=data["train_captions"].shape[1])
    said = decode_captions(sampled, data["idx_to_word"])
    expected = decode_captions(data["train_captions"][:, 1:], data["idx_to_word"])
    assert said == expected


@pytest.mark.slow
def test_solver_checkpoints_and_resumes_exactly(tmp_path):
    data = load_number_captions(num_train=20, num_val=0, num_test=0)

    def solver_for(model, **kwargs):
        return CaptioningSolver(
            model,
            data,
            update_rule="adam",
            batch_size=5,
            optim_config={"learning_rate": 1e-2},
            verbose=False,
            seed=4,
            **kwargs,
        )

    np.random.seed(0)
    model = CaptioningRNN(data["word_to_idx"], input_dim=192, wordvec_dim=8, hidden_dim=8)
    whole = solver_for(model, num_epochs=2)
    whole.train()

    np.random.seed(0)
    model = CaptioningRNN(data["word_to_idx"], input_dim=192, wordvec_dim=8, hidden_dim=8)
    first = solver_for(model, num_epochs=1, checkpoint_name=str(tmp_path / "cap"))
    first.train()
    np.random.seed(5)
    resumed = solver_for(
        CaptioningRNN(data["word_to_idx"], input_dim=192, wordvec_dim=8, hidden_dim=8), num_epochs=2
    )
    gn.load(first.checkpoint_path(1), into=resumed)
    resumed.train()
    assert resumed.loss_history == whole.loss_history
    for name, value in whole.model.params.items():
        np.testing.assert_array_equal(resumed.model.params[name], value)


def test_record_accuracy_samples_captions_each_epoch_and_keeps_the_best():
    data = load_number_captions(num_train=30, num_val=10, num_test=0)
    np.random.seed(0)
    model = CaptioningRNN(data["word_to_idx"], input_dim=192, wordvec_dim=8, hidden_dim=8)
    solver = CaptioningSolver(
        model,
        data,
        update_rule="adam",
        batch_size=10,
        num_epochs=2,
        optim_config={"learning_rate": 1e-2},
        verbose=False,
        seed=1,
        record_accuracy=True,
        num_train_samples=20,
    )
    solver.train()
    assert len(solver.train_acc_history) == len(solver.val_acc_history) == 3
    assert all(0 <= a <= 1 for a in solver.train_acc_history + solver.val_acc_history)
    assert solver.best_val_acc == max(solver.val_acc_history)
    with pytest.raises(ValueError, match="lacks val_captions"):
        CaptioningSolver(
            model, {k: v for k, v in data.items() if not k.startswith("val_")}, record_accuracy=True
        )


def test_data_parallel_captioning_is_refused_not_trained_apart():
    data = load_number_captions(num_train=10, num_val=0, num_test=0)
    model = CaptioningRNN(data["word_to_idx"], input_dim=192, wordvec_dim=8, hidden_dim=8)
    with pytest.raises(ValueError, match="does not train data-parallel"):
        CaptioningSolver(model, data, distributed=True, verbose=False)


def naive_captioning_loss(params, features, captions, cell_type, null=0):
    """The course's CaptioningRNN loss, one step and one sequence at a time in numpy."""
    sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    captions_in, captions_out = captions[:, :-1], captions[:, 1:]
    loss = 0.0
    for n in range(len(features)):
        h = features[n] @ params["W_proj"] + params["b_proj"]
        c = np.zeros_like(h)
        for t in range(captions_in.shape[1]):
            x = params["W_embed"][captions_in[n, t]]
            a = x @ params["Wx"] + h @ params["Wh"] + params["b"]
            if cell_type == "rnn":
                h = np.tanh(a)
            else:
                i, f, o, g = np.split(a, 4)
                c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
                h = sigmoid(o) * np.tanh(c)
            scores = h @ params["W_vocab"] + params["b_vocab"]
            log_p = scores - scores.max() - np.log(np.exp(scores - scores.max()).sum())
            if captions_out[n, t] != null:
                loss -= log_p[captions_out[n, t]]
    return loss / len(features)


@settings(max_examples=20, deadline=None)
@given(
    cell_type=st.sampled_from(["rnn", "lstm"]),
    N=st.integers(1, 4),
    T=st.integers(2, 6),  # one step in, one out, and more
    sizes=st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(1, 5)),
    V=st.integers(2, 7),
    seed=st.integers(0, 2**16),
)
def test_the_model_at_random_sizes_against_naive_loops(cell_type, N, T, sizes, V, seed):
    """Loss and every gradient in float64 against the loss written as loops over the
    sequences and steps (its gradient by centred differences); captions with <NULL>
    anywhere, repeated words, one word (V = 2) included."""
    D, W, H = sizes
    words = {"<NULL>": 0, **{f"w{i}": i for i in range(1, V)}}
    rng = np.random.default_rng(seed)
    model = CaptioningRNN(
        words, input_dim=D, wordvec_dim=W, hidden_dim=H, cell_type=cell_type, dtype=np.float64
    )
    for k, v in model.params.items():
        model.params[k] = rng.standard_normal(v.shape) * 0.5
    features, captions = rng.standard_normal((N, D)), rng.integers(V, size=(N, T))
    loss, grads = model.loss(features, captions)
    params = {k: v.copy() for k, v in model.params.items()}
    assert loss == pytest.approx(naive_captioning_loss(params, features, captions, cell_type))
    for name, value in params.items():
        numeric = eval_numerical_gradient(
            lambda _: naive_captioning_loss(params, features, captions, cell_type),
            value,
            verbose=False,
            h=1e-6,
        )
        np.testing.assert_allclose(grads[name], numeric, rtol=1e-6, atol=1e-8, err_msg=name)
