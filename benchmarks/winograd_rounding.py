"""Where the float32 Winograd kernels' rounding comes from: a model of their arithmetic in
numpy, every operation rounded to float32 as the kernels round it (an FMA: the exact
product added, then one rounding), against float64 on the same float32 inputs.

Relu-like inputs, weights scaled by 1/sqrt(fan-in), normal output gradients; rms error
relative to the rms of the result, the mean over two draws. For each tile and channel
count it prints the forward's error on a direct kernel's one FMA chain over (channel, tap)
and on Winograd with each point's products summed over the channels as 1, 2 or 4
interleaved FMA chains (the GEMMs of cpp/conv_winograd_avx512.cpp sum one chain) or
exactly (then rounded once), and dw's error with the products summed over the tiles as
one chain or exactly. --points ranks other points for F(2x2, 7x7); --scalings checks that
scaling the transforms' rows (moving G's factors into A^T, or B^T's rows to at most 1)
leaves the error as it is.

    python benchmarks/winograd_rounding.py --tiles 7,3 --channels 16,32,64 --points --scalings
"""

import argparse
import itertools
from fractions import Fraction

import numpy as np

F2x2_7x7 = ((0, 1, -1, 2, -2, Fraction(1, 2), Fraction(-1, 2)), 2, 7)
F4x4_3x3 = ((0, 1, -1, 2, -2), 4, 3)
TILES = {"7": F2x2_7x7, "3": F4x4_3x3}


def rounded(x):
    """x rounded to float32, held in float64 (so a product of two such is exact)."""
    return np.asarray(x, np.float64).astype(np.float32).astype(np.float64)


def transforms(points, m, r):
    """A^T (m x n), G (n x r) and B^T (n x n) of F(m, r) on `points` and infinity (the
    Cook-Toom construction), as float64 arrays."""
    n = m + r - 1
    points = [Fraction(p) for p in points]
    assert len(points) == n - 1
    a_t = [[p**i for p in points] + [int(i == m - 1)] for i in range(m)]
    g = []
    for j, p in enumerate(points):
        scale = Fraction(1)
        for q in points[:j] + points[j + 1 :]:
            scale /= p - q
        g.append([scale * p**k for k in range(r)])
    g.append([0] * (r - 1) + [1])

    def coefficients(roots):  # of prod (x - root), lowest power first
        c = [Fraction(1)]
        for root in roots:
            c = [-root * c[0]] + [c[i - 1] - root * c[i] for i in range(1, len(c))] + [c[-1]]
        return c

    b_t = [coefficients(points[:j] + points[j + 1 :]) + [0] for j in range(n - 1)]
    b_t.append(coefficients(points))
    return tuple(np.array(M, dtype=float) for M in (a_t, g, b_t))


def chains(u, v, axis_sum, count):
    """sum over `axis_sum` of u * v as `count` interleaved float32 FMA chains, the chains
    added in order; count 0: summed exactly, rounded once."""
    terms = np.moveaxis(u * v, axis_sum, 0)
    if count == 0:
        return rounded(terms.sum(0))
    total = None
    for start in range(count):
        acc = np.zeros(terms.shape[1:])
        for term in terms[start::count]:
            acc = rounded(acc + term)
        total = acc if total is None else rounded(total + acc)
    return total


def two_sided(M, x):
    """M x M^T over the last two axes, each product rounded (the kernels' 1-D passes)."""
    return rounded(rounded(M @ x) @ M.T)


def draw(m, r, C, F, tiles, seed):
    n = m + r - 1
    rng = np.random.default_rng(seed)
    d = rounded(np.maximum(rng.standard_normal((tiles, C, n, n)), 0))
    k = rounded(rng.standard_normal((F, C, r, r)) / np.sqrt(C * r * r))
    dy = rounded(rng.standard_normal((tiles, F, m, m)))
    rows = [[d[:, :, i : i + r, j : j + r] for j in range(m)] for i in range(m)]
    patches = np.stack([np.stack(row, 2) for row in rows], 2)  # (tiles, C, m, m, r, r)
    return d, k, dy, patches


def relative(got, exact):
    return np.sqrt(np.mean((got - exact) ** 2)) / np.sqrt(np.mean(exact**2))


def forward_errors(mats, m, r, C, F=16, tiles=96, seed=0, counts=(1, 2, 4, 0)):
    """The forward's error on the direct chain, then on Winograd for each chain count."""
    a_t, g, b_t = (rounded(M) for M in mats)
    d, k, _, patches = draw(m, r, C, F, tiles, seed)
    exact = np.einsum("tcijab,fcab->tfij", patches, k)
    direct = np.zeros(exact.shape)
    for c, a, b in itertools.product(range(C), range(r), range(r)):
        direct = rounded(direct + patches[:, None, c, :, :, a, b] * k[None, :, c, a, b, None, None])
    u, v = two_sided(g, k), two_sided(b_t, d)  # (F, C, n, n), (tiles, C, n, n)
    errors = [relative(direct, exact)]
    for count in counts:
        products = chains(u[None], v[:, None], 2, count)  # (tiles, F, n, n)
        errors.append(relative(two_sided(a_t, products), exact))
    return errors


def dw_errors(mats, m, r, C, F=16, tiles=256, seed=0):
    """dw's error on the direct chain over the tiles' outputs, then on Winograd with the
    products summed over the tiles as one chain and exactly."""
    a_t, g, b_t = (rounded(M) for M in mats)
    d, _, dy, patches = draw(m, r, C, F, tiles, seed)
    exact = np.einsum("tcijab,tfij->fcab", patches, dy)
    direct = np.zeros(exact.shape)
    for t, i, j in itertools.product(range(tiles), range(m), range(m)):
        direct = rounded(direct + patches[t, None, :, i, j] * dy[t, :, i, j, None, None, None])
    v, q = two_sided(b_t, d), two_sided(a_t.T, dy)  # (tiles, C, n, n), (tiles, F, n, n)
    errors = [relative(direct, exact)]
    for count in (1, 0):
        du = chains(q[:, :, None], v[:, None], 0, count)  # (F, C, n, n)
        errors.append(relative(two_sided(g.T, du), exact))
    return errors


def mean_over_draws(fn, *args, **kwargs):
    return np.mean([fn(*args, **kwargs, seed=s) for s in range(2)], axis=0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiles", default="7,3", help="7: F(2x2, 7x7), 3: F(4x4, 3x3)")
    parser.add_argument("--channels", default="16,32,64")
    parser.add_argument("--points", action="store_true", help="rank other points (7x7)")
    parser.add_argument("--scalings", action="store_true", help="scale the rows (7x7)")
    args = parser.parse_args()
    channels = [int(c) for c in args.channels.split(",")]
    for tile in args.tiles.split(","):
        points, m, r = TILES[tile]
        mats = transforms(points, m, r)
        for C in channels:
            e = mean_over_draws(forward_errors, mats, m, r, C)
            print(
                f"F({m}x{m}, {r}x{r}) forward, {C} channels: direct {e[0]:.2e}; Winograd, "
                + ", ".join(
                    f"{what} {x:.2e} ({x / e[0]:.1f}x)"
                    for what, x in zip(("1 chain", "2 chains", "4 chains", "exact sums"), e[1:])
                )
            )
        e = mean_over_draws(dw_errors, mats, m, r, 16)
        print(
            f"F({m}x{m}, {r}x{r}) dw, 16 -> 16, 256 tiles: direct {e[0]:.2e}; Winograd, "
            f"1 chain {e[1]:.2e} ({e[1] / e[0]:.1f}x), exact sums {e[2]:.2e} ({e[2] / e[0]:.1f}x)"
        )
    if args.points:
        candidates = [
            Fraction(p) for p in ("1", "2", "1/2", "3", "1/3", "3/2", "2/3", "3/4", "4/3")
        ]
        ranked = []
        for trio in itertools.combinations(candidates, 3):
            points = (0,) + tuple(s * p for p in trio for s in (1, -1))
            e = mean_over_draws(forward_errors, transforms(points, 2, 7), 2, 7, 16, counts=(1,))
            ranked.append((e[1] / e[0], ", ".join(f"+-{p}" for p in trio)))
        print("F(2x2, 7x7) forward, 16 channels, points 0 and:")
        for ratio, trio in sorted(ranked)[:5]:
            print(f"  {trio}: {ratio:.1f}x the direct chain's error")
    if args.scalings:
        a_t, g, b_t = transforms(*F2x2_7x7)
        g_integer = np.array([1, 9 / 2, 9 / 2, 90, 90, 90, 90, 1])
        b_at_most_one = 1 / np.abs(b_t).max(axis=1)
        for what, s_g, s_b in (
            ("as built", np.ones(8), np.ones(8)),
            ("G's 2/9 and 1/90 in A^T", g_integer, np.ones(8)),
            ("B^T's rows at most 1", np.ones(8), b_at_most_one),
        ):
            mats = (a_t / (s_g * s_b), g * s_g[:, None], b_t * s_b[:, None])
            e = mean_over_draws(forward_errors, mats, 2, 7, 32, counts=(1,))
            print(
                f"F(2x2, 7x7) forward, 32 channels, rows {what}: "
                f"{e[1] / e[0]:.2f}x the direct chain's"
            )


if __name__ == "__main__":
    main()
