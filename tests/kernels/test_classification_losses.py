"""layers.softmax_loss and svm_loss (the course's losses over (N, C) scores): the softmax
loss reads and writes each row's label entry by its flat index and checks the labels in one
reduction; these tests hold it to the textbook numpy formulas bit for bit, on any layout of
the scores, and to the same errors for bad labels."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphnet.kernels import layers


def textbook_softmax_loss(x, y):
    """The formulas as the course writes them (row maximum, log-sum-exp, (rows, y) indexing)."""
    N = x.shape[0]
    rows = np.arange(N)
    shifted = x - x.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_probs[rows, y].mean()
    dx = np.exp(log_probs)
    dx[rows, y] -= 1
    dx /= N
    return float(loss), dx


@settings(max_examples=150, deadline=None)
@given(
    N=st.integers(1, 40),
    C=st.integers(1, 120),
    dtype=st.sampled_from([np.float32, np.float64]),
    layout=st.sampled_from(["C", "F", "strided"]),
    scale=st.sampled_from([1e-3, 1.0, 50.0, 1e4]),
    special=st.sampled_from([None, np.inf, -np.inf, np.nan]),
    label_dtype=st.sampled_from([np.int64, np.int32, np.uint8, np.uint64]),
    seed=st.integers(0, 2**16),
)
def test_softmax_loss_is_the_textbook_formula_bit_for_bit(
    N, C, dtype, layout, scale, special, label_dtype, seed
):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((N, 2 * C)) * scale).astype(dtype)
    x = x[:, ::2] if layout == "strided" else x[:, :C]
    x = np.asfortranarray(x) if layout == "F" else np.ascontiguousarray(x) if layout == "C" else x
    if special is not None:
        x[rng.integers(N), rng.integers(C)] = special
    y = rng.integers(0, min(C, 256), N).astype(label_dtype)
    with np.errstate(all="ignore"):
        loss, dx = layers.softmax_loss(x, y)
        want_loss, want_dx = textbook_softmax_loss(x, y)
    np.testing.assert_array_equal(loss, want_loss)
    np.testing.assert_array_equal(dx, want_dx)
    assert dx.dtype == want_dx.dtype and dx.strides == want_dx.strides


@pytest.mark.parametrize("loss", [layers.softmax_loss, layers.svm_loss])
@pytest.mark.parametrize(
    "labels, shown",
    [
        (np.array([0, 1, 5]), "min 0 and max 5"),
        (np.array([-1, 0, 0]), "min -1 and max 0"),
        (np.array([0, -(2**63), 1]), "min -9223372036854775808 and max 1"),
        (np.array([2**64 - 1, 0, 0], np.uint64), "min 0 and max 18446744073709551615"),
        (np.array([0, 0, 200], np.uint8), "min 0 and max 200"),
    ],
)
def test_labels_outside_the_classes_are_refused(loss, labels, shown):
    name = loss.__name__
    with pytest.raises(ValueError, match=rf"{name}: labels must lie in \[0, 5\) .* got {shown}"):
        loss(np.zeros((3, 5)), labels)


@pytest.mark.parametrize("loss", [layers.softmax_loss, layers.svm_loss])
def test_labels_at_the_edges_are_taken(loss):
    x = np.random.default_rng(0).standard_normal((4, 5))
    for labels in (np.array([0, 4, 4, 0]), np.array([4, 4, 4, 4], np.uint8)):
        value, dx = loss(x, labels)
        assert np.isfinite(value) and dx.shape == x.shape
