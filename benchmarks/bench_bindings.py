"""What one call of a few C++ bindings costs at the smallest shapes: the binding's own cost
(pybind11's dispatch, the argument checks, the arrays it takes and makes), which a batch-1
eval call pays once per step.

    python benchmarks/bench_bindings.py [--calls 20000] [--rounds 9]

One thread, CPU time, the median of --rounds blocks of --calls calls, us per call.
"""

import argparse
import time

import numpy as np

from graphnet.kernels import _C


def binding_calls():
    f32 = np.float32
    x = np.ones((1, 1), f32)
    bias = np.zeros(1, f32)
    image = np.ones((1, 2, 4, 4), f32)
    filters = np.ones((2, 2, 3, 3), f32)
    scores = np.ones((1, 10), f32)
    filter_bias = np.zeros(2, f32)
    labels = np.zeros(1, np.int64)
    row_weight = np.ones(1, f32)
    return {
        "matmul (1, 1) x (1, 1) + bias": lambda: _C.matmul(x, x, False, False, bias),
        "conv_forward (1, 2, 4, 4), 2 3x3 filters": lambda: _C.conv_forward(
            image, filters, filter_bias, 1, 1
        ),
        "relu_forward (1, 1)": lambda: _C.relu_forward(x),
        "softmax_loss (1, 10)": lambda: _C.softmax_loss(scores, labels, row_weight),
        "softmax_forward (1, 10)": lambda: _C.softmax_forward(scores),
        "row_means (1, 1)": lambda: _C.row_means(x),
        "all_finite (1, 1)": lambda: _C.all_finite(x),
    }


def median_us(call, calls, rounds):
    times = []
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(calls):
            call()
        times.append((time.process_time() - start) / calls * 1e6)
    return sorted(times)[rounds // 2]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    _C.set_num_threads(1)
    print(f"one thread, CPU time, median of {args.rounds} x {args.calls} calls (us per call)")
    for name, call in binding_calls().items():
        print(f"{name:<42} {median_us(call, args.calls, args.rounds):6.3f}")


if __name__ == "__main__":
    main()
