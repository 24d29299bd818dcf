"""What the tests of every fusion pass check: two graphs built alike, one run gate by gate
and one fused, read the same at every node."""

import numpy as np

import graphnet as gn
from graphnet import viz
from graphnet.core import plan
from graphnet.kernels import _C


def twins(build, dtype, seed=0):
    """(plain, fused, feeds): two graphs built alike by `build(g, rng) -> feeds`, the first
    running gate by gate, the second with the fusion passes."""
    graphs = []
    for fuse in (False, True):
        g = gn.Graph(dtype=dtype)
        g.fuse = fuse
        feeds = build(g, np.random.default_rng(seed))
        graphs.append(g)
    return graphs[0], graphs[1], feeds


def only_pass(monkeypatch, cls):
    """Apply the pass `cls` alone (a pass's own tests compare it bit for bit with gate by
    gate; another pass may round otherwise)."""
    monkeypatch.setattr(plan, "REWRITES", [r for r in plan.REWRITES if isinstance(r, cls)])


def fused_labels(g, direction="forward"):
    """The labels of the fused steps of the plan from the single sink."""
    return [
        step.label
        for step in g.plan(g.single_sink("plan"), direction, fuse=True).steps
        if step.fused
    ]


def deferred(node):
    """Which of the node's value, gradient and cache a fused step left for later."""
    return {
        what
        for what in ("value", "grad", "cache")
        if node.graph.store.is_deferred(what, node.index)
    }


def scaled_error(got, want, scale=0.0):
    """The largest difference relative to the largest entry (or to `scale` if larger)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    largest = max(scale, float(np.max(np.abs(want), initial=0)), 1e-300)
    return float(np.max(np.abs(got - want), initial=0) / largest)


def leaves(item):
    """The arrays and numbers inside a cache (tuples, lists, dicts, named tuples, objects
    with slots)."""
    if isinstance(item, dict):
        return [leaf for value in item.values() for leaf in leaves(value)]
    if isinstance(item, (tuple, list)):
        return [leaf for value in item for leaf in leaves(value)]
    if hasattr(type(item), "__slots__"):  # a kernel's cache object (the norms' NormCache)
        slots = [slot for cls in type(item).__mro__ for slot in getattr(cls, "__slots__", ())]
        return [leaf for slot in slots for leaf in leaves(getattr(item, slot))]
    return [item]


def same(got, want, tol=0.0, scale=0.0):
    """Equal bit for bit (tol=0, but a zero may carry the other sign) or within tol of the
    largest entry (or of `scale`, if larger)."""
    if want is None or got is None:
        return got is None and want is None
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape or got.dtype != want.dtype:
        return False
    if tol == 0 or want.dtype.kind not in "fc":
        return bool(np.array_equal(got, want, equal_nan=want.dtype.kind in "fc"))
    return scaled_error(got, want, scale) <= tol


def assert_same_everywhere(plain, fused, value_tol=0.0, grad_tol=0.0, caches=True, value_scale=0.0):
    """Every node's value, gradient, cache and state (running averages) alike; values to
    `value_tol` of their largest entry or of `value_scale`, if larger (the magnitude of
    the terms a fused step sums, whose rounding a small result keeps); gradients to
    `grad_tol` of the largest gradient in the graph (a bias's or a beta's gradient is a
    sum of terms that may cancel: its rounding is that of the terms)."""
    scale = max(
        (float(np.max(np.abs(n.grad), initial=0)) for n in plain.nodes if n.grad is not None),
        default=0.0,
    )
    for node in plain.nodes:
        other = fused[node.name]
        assert same(other.value, node.value, value_tol, value_scale), f"value of {node.name}"
        assert same(other.grad, node.grad, grad_tol, scale), f"gradient of {node.name}"
        if caches and node.gate is not None:
            got, want = leaves(other.cache), leaves(node.cache)
            assert len(got) == len(want), f"cache of {node.name}"
            for a, b in zip(got, want):
                assert (
                    same(a, b, value_tol, value_scale) if isinstance(b, np.ndarray) else a == b
                ), f"cache of {node.name}"
        for key, item in node.state.items():
            if isinstance(item, np.ndarray):
                assert same(other.state[key], item, value_tol), f"{key} of {node.name}"


def assert_backward_from_inside(plain, fused, feeds, name):
    """A backward seeded at a node inside the fused chain (`name`) reaches every node as
    gate by gate."""
    for g in (plain, fused):
        g.forward(**feeds)
    seed = np.random.default_rng(1).standard_normal(plain[name].shape)
    for g in (plain, fused):
        g.backward(name, grad=seed)
    assert_same_everywhere(plain, fused)


def walk(g, feeds, backward=True):
    loss = g.forward(**feeds)
    if backward:
        g.backward()
    return loss


def assert_player_and_drawing_show(plain, fused, names, drawn):
    """The step player walks the fused graph's nodes both ways as the plain graph's, the
    chain's `names` among them, and the fused graph's drawing shows node `drawn`."""
    frames = viz.backward_steps(fused)
    assert [f.node.name for f in frames] == [f.node.name for f in viz.backward_steps(plain)]
    assert set(names) <= {f.node.name for f in frames}
    assert [f.node.name for f in viz.forward_steps(fused)] == [
        f.node.name for f in viz.forward_steps(plain)
    ]
    assert drawn in fused.render(show_cache=True).source


def classifier_feeds(g, rng, out, size, tapped=None):
    """Ends a test network: `out` -> affine to 3 scores -> softmax loss (and, with `tapped`,
    0.1 * its sum added to the loss, so that node feeds a second reader). Returns the
    feeds for an input x of `size`."""
    width = int(np.prod(g.run(out, x=rng.standard_normal(size)).shape[1:]))
    scores = g.affine(
        out,
        g.param("w_out", rng.standard_normal((width, 3)) * 0.3),
        g.param("b_out", np.zeros(3)),
        name="scores",
    )
    loss = g.softmax_loss(scores, g.input("y", dtype=np.int64), name="loss")
    if tapped is not None:
        g.add(loss, g.sum(tapped * g.const(0.1)), name="total")
    return {"x": rng.standard_normal(size).astype(g.dtype), "y": rng.integers(0, 3, size[0])}


def assert_train_eval_train(plain, fused, feeds, act, eval_tol=0.0):
    """A fused norm -> `act` (a node name) chain: two train steps bit for bit (the running
    averages move alike), the backward reading neither the norm's value nor the
    activation's cache; an eval forward and backward (to `eval_tol` where an eval-mode conv
    folds the batchnorm); train again."""
    for _ in range(2):
        for g in (plain, fused):
            walk(g, feeds, backward=False)
        assert deferred(fused["norm"]) == {"value"}
        assert deferred(fused[act]) == {"cache"}
        for g in (plain, fused):
            g.backward()
        assert deferred(fused["norm"]) == {"value", "grad"}
        assert deferred(fused[act]) == {"cache"}
        assert_same_everywhere(plain, fused)
    for g in (plain, fused):
        g.eval()
        walk(g, feeds)
    assert_same_everywhere(plain, fused, eval_tol, eval_tol)
    for g in (plain, fused):
        g.train()
        walk(g, feeds)
    assert_same_everywhere(plain, fused)


def walk_fused_one_way(plain, g, feeds, fuse_forward, fuse_backward):
    """Forward and backward: `plain` gate by gate, `g` fused only where the flags say."""
    walk(plain, feeds)
    g.fuse = fuse_forward
    g.forward(**feeds)
    g.fuse = fuse_backward
    g.backward()


def chain_labels(g, module):
    """The labels of the steps the chain pass in `module` (e.g. conv_chain) put in the last
    forward walk."""
    return [
        step.label
        for step in g.executor.last_forward.steps
        if step.fused and step.run.__module__ == f"graphnet.passes.{module}"
    ]


def eval_walks(plain, fused, feeds):
    """Both graphs in eval mode, a forward and a backward each."""
    for g in (plain, fused):
        g.eval()
        walk(g, feeds)


def assert_chain_reads_as_gates(build, dtype, module, label):
    """An eval forward of the small batch, then a backward gate by gate (the fused backward
    plan's passes round otherwise) on the caches it wrote: the chain's one step, nothing
    left for later, every node bit for bit as gate by gate."""
    plain, fused, feeds = twins(build, dtype)
    plain.eval(), fused.eval()
    fused.forward(**feeds)
    assert chain_labels(fused, module) == [label]
    for node in fused.nodes:  # before the plain backward reads them
        assert not deferred(node) & {"value", "cache"}, node.name
    walk_fused_one_way(plain, fused, feeds, fuse_forward=True, fuse_backward=False)
    fused.fuse = True
    assert_same_everywhere(plain, fused)
    return plain, fused, feeds


def assert_updates_between_calls_are_read(build, dtype, module, label):
    """Nothing is kept from one call to the next: the weights, bias, gamma, beta and the
    running averages changed in place between calls change the output, as gate by gate."""
    plain, fused, feeds = assert_chain_reads_as_gates(build, dtype, module, label)
    for name in ("w", "b", "gamma", "beta", "running_mean", "running_var"):
        before = np.array(fused["scores"].value)
        for g in (plain, fused):
            if name.startswith("running"):
                g["norm"].state[name] *= 1.5
            else:
                g[name].value += 0.25
            g.forward(**feeds)
        assert chain_labels(fused, module) == [label]
        assert not np.array_equal(fused["scores"].value, before), name
        assert_same_everywhere(plain, fused)


def assert_bitwise_on_two_threads(build, dtype):
    """A fused walk of `build`'s graph on two kernel threads (which split a norm's channels,
    each reduced by one) gives every value and gradient of one thread's, bit for bit."""
    runs = []
    for threads in (1, 2):
        before = _C.get_num_threads()
        _C.set_num_threads(threads)
        try:
            _, fused, feeds = twins(build, dtype)
            walk(fused, feeds)
            runs.append({n.name: (n.value, n.grad) for n in fused.nodes})
        finally:
            _C.set_num_threads(before)
    for name, (value, grad) in runs[0].items():
        assert np.array_equal(runs[1][name][0], value), name
        assert (grad is None) == (runs[1][name][1] is None), name
        if grad is not None:
            assert np.array_equal(runs[1][name][1], grad), name


def assert_nonfinite_seed_reads_as_gate_by_gate(plain, fused, name, dtype):
    """After a walk of both: a forward, then a backward from node `name` seeded with NaN,
    +inf and -inf among its entries, in both; every node alike after each."""
    assert np.isnan(fused[name].value).any()
    assert_same_everywhere(plain, fused)
    seed = np.random.default_rng(1).standard_normal(np.shape(fused[name].value))
    seed.flat[::5], seed.flat[1::7], seed.flat[2::9] = np.nan, np.inf, -np.inf
    for g in (plain, fused):
        g.forward()
        g.backward(name, grad=seed.astype(dtype))
    assert_same_everywhere(plain, fused)


def relu_output_backward_calls(monkeypatch):
    """The shapes of dout in each call of kernels.norm.batchnorm_relu_output_backward from
    passes/norm_relu.py (the one-call backward of a norm -> [add ->] relu), as they come."""
    from graphnet.passes import norm_relu

    calls = []
    one_call = norm_relu.norm_kernels.batchnorm_relu_output_backward
    monkeypatch.setattr(
        norm_relu.norm_kernels,
        "batchnorm_relu_output_backward",
        lambda *args: calls.append(args[0].shape) or one_call(*args),
    )
    return calls
