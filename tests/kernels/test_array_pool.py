"""The array pool (cpp/array_pool.h): a graph walk's arrays come from it, a training step
reuses the blocks the step before freed (no new blocks, no page faults once warm), it
holds no more than its peak, gives back what numpy asks of an allocator (zeroed blocks,
resized blocks with their data), and GRAPHNET_RETURN_FREED_MEMORY=1 leaves the walks to
numpy's allocator. Each case runs in a fresh interpreter, which reads the environment
when graphnet is imported (under .ci/sanitize: with AddressSanitizer watching the pool)."""

import os
import platform
import threading

import numpy as np
import pytest

from graphnet.kernels import _C
from isolation import assert_survived, run_in_child

# A CNN whose batch-32 activations (32, 16, 64, 64) are 8 MB each: large blocks, of the
# sizes a step frees and the next step asks for again.
TRAIN = """
    import os, resource
    import numpy as np
    import graphnet as gn
    from graphnet.kernels import _C
    from numpy._core.multiarray import get_handler_name

    rng = np.random.default_rng(0)
    g = gn.Graph(dtype=np.float32)
    x = g.input("x", shape=(None, 3, 64, 64), requires_grad=False)
    y = g.input("y", shape=(None,), dtype=np.int64)
    w1 = g.param("w1", 0.1 * rng.standard_normal((16, 3, 3, 3)).astype(np.float32))
    b1 = g.param("b1", np.zeros(16, np.float32))
    h = g.relu(g.conv(x, w1, b1, stride=1, pad=1))
    h = g.spatial_batchnorm(h, g.param("gamma", np.ones(16, np.float32)),
                            g.param("beta", np.zeros(16, np.float32)))
    w2 = g.param("w2", 0.01 * rng.standard_normal((16 * 32 * 32, 10)).astype(np.float32))
    scores = g.affine(g.max_pool(h, pool_height=2, pool_width=2, stride=2), w2,
                      g.param("b2", np.zeros(10, np.float32)))
    loss = g.softmax_loss(scores, y)
    X = rng.standard_normal((32, 3, 64, 64)).astype(np.float32)
    Y = rng.integers(0, 10, 32)

    def step():
        g.forward(x=X, y=Y)
        g.backward()
        for name, grad in g.grads.items():
            g[name].value -= 1e-3 * grad

    for _ in range(3):
        step()
    blocks = _C.array_pool_counts()["new_blocks"]
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        step()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    print(get_handler_name(g[h.name].value), get_handler_name(np.ones(3)),
          _C.array_pool_counts()["new_blocks"] - blocks, faults)
"""

on_glibc_without_asan = pytest.mark.skipif(
    platform.system() != "Linux"
    or platform.libc_ver()[0] != "glibc"
    or "asan" in os.environ.get("LD_PRELOAD", ""),  # .ci/sanitize: its own allocator
    reason="counts glibc's page faults",
)


def _run_with_opt_out(monkeypatch, opt_out, script):
    """The script in a child process, with GRAPHNET_RETURN_FREED_MEMORY=opt_out (unset: None)."""
    if opt_out is None:
        monkeypatch.delenv("GRAPHNET_RETURN_FREED_MEMORY", raising=False)
    else:
        monkeypatch.setenv("GRAPHNET_RETURN_FREED_MEMORY", opt_out)
    result = run_in_child(script)
    assert_survived(result)
    return result


def _train(monkeypatch, opt_out):
    result = _run_with_opt_out(monkeypatch, opt_out, TRAIN)
    value_memory, other_memory, new_blocks, faults = result.stdout.split()
    return value_memory, other_memory, int(new_blocks), int(faults)


@pytest.mark.parametrize("opt_out", [None, "", "0"])
def test_a_training_step_takes_no_new_memory_once_warm(monkeypatch, opt_out):
    value_memory, other_memory, new_blocks, faults = _train(monkeypatch, opt_out)
    assert value_memory == "graphnet_array_pool"
    assert other_memory == "default_allocator"  # arrays made outside a walk: numpy's own
    assert new_blocks == 0
    if "asan" not in os.environ.get("LD_PRELOAD", ""):
        # Three steps write ~180 MB of activations, caches and gradients: 44,000 pages.
        assert faults < 500


@on_glibc_without_asan
def test_the_environment_leaves_the_walks_to_numpys_allocator(monkeypatch):
    value_memory, _, new_blocks, faults = _train(monkeypatch, "1")
    assert value_memory == "default_allocator" and new_blocks == 0
    # What the pool saves (0 faults there): glibc gives some of the freed 8 MB arrays back
    # to the kernel, and the next step faults them in again (3,700 pages here).
    assert faults > 1000


def _pooled(make):
    previous = _C.set_array_memory_handler(_C.array_pool)
    try:
        return make()
    finally:
        _C.set_array_memory_handler(previous)


def test_blocks_come_back_zeroed_resized_and_aligned():
    size = 1 << 20  # float64: 8 MB, a pooled block
    dirty = _pooled(lambda: np.full(size, 7.0))
    del dirty  # its block is kept, holding sevens
    zeros = _pooled(lambda: np.zeros(size))
    assert not zeros.any() and zeros.ctypes.data % 64 == 0
    grown = _pooled(lambda: np.arange(1000.0))  # a small block, malloc's
    _pooled(lambda: grown.resize(3 * size, refcheck=False))  # realloc: small to pooled
    assert np.array_equal(grown[:1000], np.arange(1000.0))
    _pooled(lambda: grown.resize(500, refcheck=False))  # and back
    assert np.array_equal(grown, np.arange(500.0))


def _walk_like(n):
    """A walk's allocations: a few arrays of n float64, freed once it is over."""
    arrays = _pooled(lambda: [np.ones(n) for _ in range(4)])
    del arrays


def test_the_pool_keeps_at_most_its_peak_and_the_latest_sizes():
    _C.release_array_pool()
    for n in (1 << 20, 1 << 18, 3 << 18, 1 << 19):  # a run at one batch size, then others
        for _ in range(3):
            _walk_like(n)
        counts = _C.array_pool_counts()
        assert counts["kept_bytes"] <= counts["peak_bytes"]
        _walk_like(n)  # the same sizes again: served from what the pool kept
        assert _C.array_pool_counts()["new_blocks"] == counts["new_blocks"]
    _C.release_array_pool()
    assert _C.array_pool_counts()["kept_bytes"] == 0


def test_threads_share_the_pool_without_mixing_their_arrays():
    def fill_and_check(tag, errors):
        rng = np.random.default_rng(tag)
        for _ in range(200):
            n = int(rng.integers(1 << 15, 1 << 17))
            arrays = _pooled(lambda n=n: [np.full(n, float(tag)) for _ in range(3)])
            if any((a != tag).any() for a in arrays):
                errors.append(tag)

    errors: list = []
    threads = [threading.Thread(target=fill_and_check, args=(t, errors)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors


def test_none_changes_nothing():
    assert _C.set_array_memory_handler(None) is None
    with pytest.raises(ValueError, match="mem_handler"):
        _C.set_array_memory_handler(object())


def _kernel_scratch_bytes():
    return _C.array_pool_counts()["kernel_scratch_bytes"]


def _run_kernels_keeping_scratch():
    """A conv on one image (its packed weights and outputs: kept buffers) and an LSTM
    forward (its packed weight panels: kept scratch), on the calling thread."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 64, 16, 16), dtype=np.float32)
    w = rng.standard_normal((128, 64, 3, 3), dtype=np.float32)
    _C.conv_forward(x, w, np.zeros(128, np.float32), 2, 1)
    N, T, D, H = 2, 3, 32, 256
    _C.recurrent_forward(
        "lstm",
        rng.standard_normal((N, T, D), dtype=np.float32),
        np.zeros((N, H), np.float32),
        rng.standard_normal((D, 4 * H), dtype=np.float32),
        rng.standard_normal((H, 4 * H), dtype=np.float32),
        np.zeros(4 * H, np.float32),
    )


def test_release_returns_the_kernels_kept_scratch_of_every_thread():
    _run_kernels_keeping_scratch()
    # at least the packed Wh where the recurrent kernels pack it (AVX-512; a portable build's
    # scratch is the conv's)
    packed_wh = 256 * 4 * 256 * 4 if _C.avx512_matmul_active() else 0
    assert _kernel_scratch_bytes() > packed_wh
    _C.release_array_pool()
    assert _kernel_scratch_bytes() == 0

    # Another thread's scratch goes when that thread next looks at it: before its next
    # kernel takes any, it holds nothing from before the release.
    kept, ready, go = [], threading.Event(), threading.Event()

    def worker():
        _run_kernels_keeping_scratch()
        kept.append(_kernel_scratch_bytes())
        ready.set()
        go.wait()
        kept.append(_kernel_scratch_bytes())

    thread = threading.Thread(target=worker)
    thread.start()
    ready.wait()
    _C.release_array_pool()
    go.set()
    thread.join()
    assert kept[0] > 0 and kept[1] == 0


# model.loss alone in a loop, at batch 1, on a net with 64 -> 64 channel convs on 8 x 8
# (Winograd, the tap weight gradient): buffers of 16 KB to 1 MB from the C library's heap.
BATCH_ONE_LOSS = """
    import resource
    import numpy as np
    import graphnet as gn

    rng = np.random.default_rng(0)
    g = gn.Graph(dtype=np.float32)
    x = g.input("x", shape=(None, 64, 8, 8), requires_grad=False)
    y = g.input("y", shape=(None,), dtype=np.int64)
    h = x
    for i in range(4):
        w = g.param(f"w{i}", 0.05 * rng.standard_normal((64, 64, 3, 3)).astype(np.float32))
        h = g.relu(g.conv(h, w, g.param(f"b{i}", np.zeros(64, np.float32)), stride=1, pad=1))
    w = g.param("w", 0.01 * rng.standard_normal((64 * 8 * 8, 10)).astype(np.float32))
    g.softmax_loss(g.affine(h, w, g.param("b", np.zeros(10, np.float32))), y, name="loss")
    X = rng.standard_normal((1, 64, 8, 8)).astype(np.float32)
    Y = np.array([3])
    for _ in range(5):
        g.forward(x=X, y=Y)
        g.backward()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        g.forward(x=X, y=Y)
        g.backward()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)
"""


@on_glibc_without_asan
@pytest.mark.parametrize("opt_out", [None, "1"])
def test_a_batch_one_loss_faults_no_pages_once_warm(monkeypatch, opt_out):
    # glibc's documented thresholds, pinned: left dynamic, it raises them to the largest
    # block the process has freed so far, and a child run after the whole suite once kept
    # its heap's top through every call with the array pool off (0 faults).
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", str(128 * 1024))
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", str(128 * 1024))
    result = _run_with_opt_out(monkeypatch, opt_out, BATCH_ONE_LOSS)
    faults = int(result.stdout.split()[-1])
    if opt_out is None:  # the heap keeps what the calls free (keep_freed_heap)
        assert faults < 100
    else:  # the C library's defaults: its heap's top goes back and comes again each call
        assert faults > 20 * 50


# Conv layers whose passes take kept scratch of different sizes (cache_line.h): Winograd
# by images and its weight gradient into slots, the direct and tap kernels, the phase
# planes of a stride-2 layer, im2col + GEMM (float64), on batches small and large.
SCRATCH_LAYERS = [  # (N, C, F, size, kernel, stride, pad)
    (16, 64, 64, 16, 3, 1, 1),
    (2, 32, 32, 8, 3, 1, 1),
    (8, 128, 128, 8, 3, 1, 1),
    (4, 16, 32, 12, 5, 1, 2),
    (1, 64, 128, 16, 3, 2, 1),
    (6, 24, 40, 9, 3, 1, 0),
]


def _conv_passes(layer, dtype):
    N, C, F, size, k, stride, pad = layer
    rng = np.random.default_rng(size * C + F)
    x = rng.standard_normal((N, C, size, size)).astype(dtype)
    w = rng.standard_normal((F, C, k, k)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    out = _C.conv_forward(x, w, b, stride, pad)
    dout = rng.standard_normal(out.shape).astype(dtype)
    return (out, *_C.conv_backward(dout, x, w, stride, pad))


@pytest.mark.parametrize("threads", [1, 2])
def test_kept_scratch_gives_the_bits_of_fresh_buffers(threads):
    """Each layer's passes on buffers kept from larger and smaller calls before (holding
    their values) give the bits they give on fresh ones, taken after a release."""
    before = _C.get_num_threads()
    _C.set_num_threads(threads)
    try:
        calls = [(layer, dtype) for layer in SCRATCH_LAYERS for dtype in (np.float32, np.float64)]
        fresh = {}
        for call in calls:
            _C.release_array_pool()
            fresh[call] = _conv_passes(*call)
        # large, small, large again: each call's buffers are the calls' before
        for call in calls + calls[::-1] + calls:
            for got, want in zip(_conv_passes(*call), fresh[call]):
                assert got.tobytes() == want.tobytes(), call
        assert _kernel_scratch_bytes() > 0
    finally:
        _C.set_num_threads(before)
        _C.release_array_pool()
    assert _kernel_scratch_bytes() == 0
