"""A course model's loss(X, y) as a graph, against the course's way: layer functions
chained by hand.

The peer is the forward and backward pass a student writes in the course's fc_net.py and
cnn.py, calling the same layer functions (graphnet.cs231n.layers, .layer_utils, the C++
fast layers where the course's Cython ones would be). Both compute the same loss and
gradients from the same params; they are timed in turns and the medians compared. Two
sizes: the notebooks' gradient-check models (a few samples: thousands of calls, where a
graph's per-call walk shows) and a training minibatch.

    python benchmarks/bench_course.py [--repeats 200]
"""
import argparse
import statistics
import time

import numpy as np

from graphnet.cs231n import layer_utils as lu
from graphnet.cs231n.classifiers.cnn import ThreeLayerConvNet
from graphnet.cs231n.classifiers.fc_net import FullyConnectedNet
from graphnet.kernels import _C


def fc_by_hand(model, X, y):
    """The course's FullyConnectedNet.loss without normalization or dropout."""
    p, reg, L = model.params, model.reg, model.num_layers
    h, caches = X, []
    for i in range(1, L):
        h, cache = lu.affine_relu_forward(h, p[f"W{i}"], p[f"b{i}"])
        caches.append(cache)
    scores, cache = lu.affine_forward(h, p[f"W{L}"], p[f"b{L}"])
    loss, dscores = lu.softmax_loss(scores, y)
    grads = {}
    dh, grads[f"W{L}"], grads[f"b{L}"] = lu.affine_backward(dscores, cache)
    for i in range(L - 1, 0, -1):
        dh, grads[f"W{i}"], grads[f"b{i}"] = lu.affine_relu_backward(dh, caches[i - 1])
    for i in range(1, L + 1):
        loss += 0.5 * reg * np.sum(p[f"W{i}"] ** 2)
        grads[f"W{i}"] = grads[f"W{i}"] + reg * p[f"W{i}"]
    return loss, grads


def cnn_by_hand(model, X, y):
    """The course's ThreeLayerConvNet.loss."""
    p, reg = model.params, model.reg
    conv_param = {"stride": 1, "pad": (p["W1"].shape[2] - 1) // 2}
    pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    h1, c1 = lu.conv_relu_pool_forward(X, p["W1"], p["b1"], conv_param, pool_param)
    h2, c2 = lu.affine_relu_forward(h1, p["W2"], p["b2"])
    scores, c3 = lu.affine_forward(h2, p["W3"], p["b3"])
    loss, dscores = lu.softmax_loss(scores, y)
    grads = {}
    dh2, grads["W3"], grads["b3"] = lu.affine_backward(dscores, c3)
    dh1, grads["W2"], grads["b2"] = lu.affine_relu_backward(dh2, c2)
    _, grads["W1"], grads["b1"] = lu.conv_relu_pool_backward(dh1, c1)
    for w in ("W1", "W2", "W3"):
        loss += 0.5 * reg * np.sum(p[w] ** 2)
        grads[w] = grads[w] + reg * p[w]
    return loss, grads


def compare(name, model, by_hand, X, y, repeats):
    loss, grads = model.loss(X, y)
    hand_loss, hand_grads = by_hand(model, X, y)
    assert np.isclose(loss, hand_loss, rtol=1e-5), (loss, hand_loss)
    for key, grad in grads.items():
        np.testing.assert_allclose(grad, hand_grads[key], rtol=1e-4, atol=1e-6)
    times = {"graph": [], "by hand": []}
    for _ in range(repeats):
        for label, run in (("graph", lambda: model.loss(X, y)),
                           ("by hand", lambda: by_hand(model, X, y))):
            start = time.perf_counter()
            run()
            times[label].append(time.perf_counter() - start)
    graph, hand = (statistics.median(times[k]) * 1e3 for k in ("graph", "by hand"))
    print(f"| {name} | {graph:.3f} ms | {hand:.3f} ms | {graph / hand:.2f}x |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    print(f"threads: {_C.get_num_threads()}")
    print("| loss(X, y) with grads | graph (graphnet model) | layer functions by hand | ratio |")
    print("|---|---|---|---|")
    np.random.seed(231)
    X, y = np.random.randn(2, 15), np.random.randint(10, size=2)
    compare("FullyConnectedNet [20, 30], 2 samples, float64 (the notebooks' check)",
            FullyConnectedNet([20, 30], input_dim=15, reg=3.14, weight_scale=5e-2,
                              dtype=np.float64), fc_by_hand, X, y, args.repeats)
    X, y = np.random.randn(2, 3, 16, 16), np.random.randint(10, size=2)
    compare("ThreeLayerConvNet 3 filters 3x3, hidden 7, 2 images 16x16, float64 (the check)",
            ThreeLayerConvNet(num_filters=3, filter_size=3, input_dim=(3, 16, 16),
                              hidden_dim=7, dtype=np.float64), cnn_by_hand, X, y, args.repeats)
    X = np.random.randn(100, 3 * 32 * 32).astype(np.float32)
    y = np.random.randint(10, size=100)
    compare("FullyConnectedNet [100] * 5, batch 100, float32 (training)",
            FullyConnectedNet([100] * 5, reg=1e-3, weight_scale=5e-2), fc_by_hand, X, y,
            args.repeats)
    X = np.random.randn(50, 3, 32, 32).astype(np.float32)
    y = np.random.randint(10, size=50)
    compare("ThreeLayerConvNet defaults, batch 50, float32 (training)",
            ThreeLayerConvNet(weight_scale=1e-2, reg=1e-3), cnn_by_hand, X, y,
            max(args.repeats // 10, 5))


if __name__ == "__main__":
    main()
