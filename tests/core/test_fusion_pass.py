"""conv -> relu -> max_pool chains run as fused steps (graphnet/passes/conv_relu_pool.py).
Every node's value and gradient must read as when the gates run one by one, the fused steps must
really be taken where they apply, and never where they do not."""

import numpy as np
import pytest

import graphnet as gn

# (C, H, W, F, kernel, stride, pad, pool_height, pool_width, pool_stride): the CIFAR layer
# (the direct AVX2 kernels), stride 2, overlapping pool windows, pool stride 1, a kernel
# wider than 8, rows too narrow for the direct kernels.
CHAINS = [
    (3, 32, 32, 8, 7, 1, 3, 2, 2, 2),
    (2, 9, 11, 4, 3, 2, 1, 2, 2, 2),
    (3, 12, 10, 5, 3, 1, 1, 3, 3, 2),
    (2, 8, 8, 3, 3, 1, 1, 2, 2, 1),
    (2, 20, 19, 3, 9, 1, 4, 2, 2, 2),
    (3, 6, 7, 4, 1, 1, 0, 2, 3, 2),
]


def chain_net(dtype, chain, seed=0, hidden=None, hidden_pool=(2, 2, 1)):
    """x -> conv -> relu -> max_pool [-> conv -> relu -> max_pool] -> affine -> softmax loss,
    with a second chain when `hidden` gives its filter count (its pool: `hidden_pool`).
    Returns (graph, feeds)."""
    C, H, W, F, k, stride, pad, ph, pw, ps = chain
    rng = np.random.default_rng(seed)
    g = gn.Graph(dtype=dtype)
    x, y = g.input("x", requires_grad=False), g.input("y", dtype=np.int64)
    h = _chain(g, x, "1", C, F, k, stride, pad, (ph, pw, ps), rng)
    if hidden:
        h = _chain(g, h, "2", F, hidden, 3, 1, 1, hidden_pool, rng)
    N = 4
    features = int(np.prod(g.run(h, x=rng.standard_normal((N, C, H, W))).shape[1:]))
    w_out = g.param("W_out", rng.standard_normal((features, 5)) * 0.1)
    g.softmax_loss(g.affine(h, w_out, g.param("b_out", np.zeros(5)), name="scores"), y, name="loss")
    feeds = {"x": rng.standard_normal((N, C, H, W)).astype(dtype), "y": rng.integers(0, 5, N)}
    return g, feeds


def _chain(g, x, tag, C, F, k, stride, pad, pool, rng):
    w = g.param("w" + tag, rng.standard_normal((F, C, k, k)) * 0.3)
    b = g.param("b" + tag, rng.standard_normal(F) * 0.1)
    conv = g.conv(x, w, b, stride=stride, pad=pad, name="conv" + tag)
    return g.max_pool(g.relu(conv, name="relu" + tag), *pool, name="pool" + tag)


def walk(g, feeds, fuse):
    """forward + backward; (loss, {name: (value, grad)}) read through the nodes."""
    g.fuse = fuse
    loss = g.forward(**feeds)
    g.backward()
    return loss, {n.name: (_copy(n.value), _copy(n.grad)) for n in g.nodes}


def _copy(item):
    return None if item is None else np.array(item)


def scaled_error(got, want):
    """The largest difference relative to the largest entry: rounding in sums that
    cancel is judged against the terms' scale, not against a result near zero."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / max(1e-300, np.max(np.abs(want))))


def deferred(node):
    """Which of the node's value, gradient and cache a fused step left for later."""
    return {
        what
        for what in ("value", "grad", "cache")
        if node.graph.store.is_deferred(what, node.index)
    }


def assert_reads_as_gate_by_gate(g, feeds, tol):
    loss, plain = walk(g, feeds, fuse=False)
    fused_loss, fused = walk(g, feeds, fuse=True)
    assert fused_loss == loss
    for name, (value, grad) in plain.items():
        got_value, got_grad = fused[name]
        if value is not None:
            assert got_value.tobytes() == value.tobytes(), name
        if grad is None:
            assert got_grad is None, name
        elif g[name].kind == "param" and g[name].op != "const":
            assert scaled_error(got_grad, grad) <= tol, name  # summed in another order
        else:
            assert got_grad.tobytes() == grad.tobytes(), name


@pytest.mark.slow
@pytest.mark.parametrize("chain", CHAINS)
@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-5), (np.float64, 1e-12)])
def test_a_fused_chain_reads_as_gate_by_gate(chain, dtype, tol):
    g, feeds = chain_net(dtype, chain)
    g.forward(**feeds)
    g.backward()
    # The fused steps ran: the chain's inner values, caches and gradients wait to be read
    # (each computed by its own gate when read).
    assert deferred(g["conv1"]) == {"value", "grad", "cache"}
    assert deferred(g["relu1"]) == {"value", "grad", "cache"}
    assert g["x"].grad is None  # data: its gradient is not computed
    assert_reads_as_gate_by_gate(g, feeds, tol)


@pytest.mark.slow
def test_a_fused_chain_passes_the_numerical_gradient_check():
    g, feeds = chain_net(np.float64, CHAINS[1])
    errors = gn.gradcheck(g, **feeds)
    assert set(errors) == {"w1", "b1", "W_out", "b_out"}
    assert max(errors.values()) < 1e-7


@pytest.mark.slow
@pytest.mark.parametrize("hidden_pool", [(2, 2, 1), (2, 2, 2)], ids=["overlapping", "apart"])
def test_a_chain_below_another_gives_its_input_a_gradient(hidden_pool):
    """The upper chain's conv input needs a gradient: its step computes the conv's
    gradient in full (the relu's waits to be read); the lower chain, fed by data, takes
    the pooled-gradient kernel."""
    g, feeds = chain_net(np.float64, CHAINS[3], hidden=3, hidden_pool=hidden_pool)
    convs_run = []
    for name in ("conv1", "conv2"):  # count the conv gates' own forward calls
        gate = g[name].gate
        gate.forward = lambda *args, run=gate.forward: convs_run.append(1) or run(*args)
    g.forward(**feeds)
    g.backward()
    assert deferred(g["conv1"]) == {"value", "grad", "cache"}
    assert deferred(g["conv2"]) == {"value", "cache"}  # its gradient was needed for dx
    assert deferred(g["relu2"]) == {"value", "grad", "cache"}
    assert not convs_run  # the chains' gradients never need the convs' outputs
    assert_reads_as_gate_by_gate(g, feeds, 1e-12)
    assert max(gn.gradcheck(g, **feeds).values()) < 1e-7


@pytest.mark.parametrize("extra", ["relu feeds a sum", "conv feeds a sum"])
def test_a_chain_whose_inner_node_feeds_another_gate_is_not_fused(extra):
    g, feeds = chain_net(np.float64, CHAINS[1])
    tapped = g["relu1"] if extra == "relu feeds a sum" else g["conv1"]
    tap_loss = g.softmax_loss(
        g.affine(
            g.sum(tapped, axis=(2, 3)),
            g.param("W_tap", np.ones((4, 5))),
            g.param("b_tap", np.zeros(5)),
        ),
        g["y"],
    )
    g.add(g["loss"], tap_loss, name="total")
    g.forward(**feeds)
    g.backward()
    if extra == "conv feeds a sum":
        assert not deferred(g["conv1"])
        # relu -> max_pool still runs as one step (graphnet/passes/relu_pool.py).
        assert deferred(g["relu1"])
    else:
        # conv -> relu still runs as one step (graphnet/passes/conv_activation.py), the
        # relu's value computed for its two readers.
        assert deferred(g["conv1"]) == {"value", "grad"}
        assert deferred(g["relu1"]) == {"cache"}
    assert_reads_as_gate_by_gate(g, feeds, 0)


def test_gradients_left_for_later_go_with_the_values_they_belong_to():
    """A deferred gradient is dropped, like every gradient of its backward, by the next
    forward (new values everywhere): it reads None, never a gradient computed from the new
    arrays; the next backward's is that of the new values."""
    g, feeds = chain_net(np.float32, CHAINS[0])
    flipped = {"x": feeds["x"][::-1].copy(), "y": feeds["y"]}
    _, plain = walk(g, flipped, fuse=False)
    g.fuse = True
    g.forward(**feeds)
    g.backward()
    assert g.store.is_deferred("grad", g["conv1"].index)
    g.forward(**flipped)
    for name in ("conv1", "relu1"):
        assert not g.store.is_deferred("grad", g[name].index) and g[name].grad is None
    g.backward()
    for name in ("conv1", "relu1"):
        assert g[name].grad.tobytes() == plain[name][1].tobytes()


def test_what_is_left_for_later_survives_in_place_updates():
    """The optimizer updates the weights in place after a step, and a training loop may
    refill its input batch in place: the chain's values and gradients read afterwards are
    still those of the step."""
    g, feeds = chain_net(np.float32, CHAINS[0])
    _, plain = walk(g, feeds, fuse=False)
    g.fuse = True
    g.forward(**feeds)
    g.backward()
    g["w1"].value += 1  # as adam does
    g["b1"].value -= 1
    feeds["x"][...] = 0  # the next batch, written into the same array
    for name in ("conv1", "relu1"):
        value, grad = plain[name]
        assert g[name].value.tobytes() == value.tobytes(), name
        assert g[name].grad.tobytes() == grad.tobytes(), name


def test_a_backward_without_fusion_after_a_fused_forward():
    g, feeds = chain_net(np.float64, CHAINS[2])
    _, plain = walk(g, feeds, fuse=False)
    g.fuse = True
    g.forward(**feeds)
    assert deferred(g["relu1"]) == {"value", "cache"}
    g.fuse = False
    g.backward()
    for name, (_, grad) in plain.items():
        if grad is not None:
            assert g[name].grad.tobytes() == grad.tobytes(), name


@pytest.mark.parametrize("start", ["relu1", "conv1"])
def test_a_backward_from_inside_a_fused_chain(start):
    """After a fused forward, a backward that starts inside the chain runs the chain's
    gates one by one, on the values and caches the fused step had left for later."""
    g, feeds = chain_net(np.float64, CHAINS[1])
    g.fuse = False
    g.forward(**feeds)
    seed = np.random.default_rng(5).standard_normal(g[start].shape)
    g.backward(start, grad=seed)
    want = {name: np.array(g[name].grad) for name in ("conv1", "w1", "b1")}
    g.fuse = True
    g.forward(**feeds)
    assert deferred(g["relu1"]) == {"value", "cache"}
    g.backward(start, grad=seed)
    for name, grad in want.items():
        assert g[name].grad.tobytes() == grad.tobytes(), name


@pytest.mark.parametrize(
    "x_shape, words",
    [
        ((2, 2, 8, 8), ["channels differ", "(2, 2, 8, 8)", "(4, 3, 3, 3)"]),
        ((2, 3, 1, 1), ["max_pool window 2x2", "larger than the input 1x1", "(2, 3, 1, 1)"]),
    ],
)
def test_a_fused_chain_that_fails_names_its_nodes_and_shapes(x_shape, words):
    g = gn.Graph(np.float32)
    x = g.input("x", requires_grad=False)  # no static shape: the kernels find the mistake
    conv = g.conv(
        x, g.param("w", np.ones((4, 3, 3, 3))), g.param("b", np.zeros(4)), pad=1, name="conv1"
    )
    g.sum(g.max_pool(g.relu(conv, name="relu1"), 2, 2, 2, name="pool1"))
    with pytest.raises(gn.GraphError) as err:
        g.forward(x=np.ones(x_shape, np.float32))
    for word in words + ["fused chain 'conv1' (conv) -> 'relu1' (relu) -> 'pool1' (max_pool)"]:
        assert word in str(err.value)
    assert g["relu1"].value is None and g["conv1"].value is None  # nothing half-made


def test_anomaly_mode_runs_the_gates_one_by_one():
    """detect_anomaly checks every node's value as it is made, so it names the conv."""
    g, feeds = chain_net(np.float64, CHAINS[1])
    with gn.detect_anomaly():
        g.forward(**feeds)
        g.backward()
    assert not any(deferred(g[name]) for name in ("conv1", "relu1"))
    g["w1"].value[0, 0, 0, 0] = np.inf
    with gn.detect_anomaly(), pytest.raises(gn.AnomalyError, match="'conv1'"):
        g.forward(**feeds)


def test_the_drawing_shows_the_chain_values_and_gradients():
    g, feeds = chain_net(np.float64, CHAINS[5])
    g.forward(**feeds)
    g.backward()
    source = g.render().source
    for name in ("conv1", "relu1", "pool1"):
        assert name in source
    # the drawing read their values and gradients; their caches it does not need
    assert deferred(g["relu1"]) == deferred(g["conv1"]) == {"cache"}


@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_fused_convnet_against_torch(dtype):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    g, feeds = chain_net(dtype, CHAINS[0], hidden=4)
    loss = g.forward(**feeds)
    g.backward()
    t = {
        name: torch.tensor(g[name].value, requires_grad=True)
        for name in ("w1", "b1", "w2", "b2", "W_out", "b_out")
    }
    h = F.max_pool2d(F.relu(F.conv2d(torch.tensor(feeds["x"]), t["w1"], t["b1"], padding=3)), 2)
    h = F.max_pool2d(F.relu(F.conv2d(h, t["w2"], t["b2"], padding=1)), 2, stride=1)
    scores = h.reshape(len(h), -1) @ t["W_out"] + t["b_out"]
    torch_loss = F.cross_entropy(scores, torch.tensor(feeds["y"]))
    torch_loss.backward()
    tol = 1e-4 if dtype == np.float32 else 1e-10
    assert loss == pytest.approx(torch_loss.item(), rel=tol)
    for name, tensor in t.items():
        assert scaled_error(g[name].grad, tensor.grad.numpy()) < tol, name
