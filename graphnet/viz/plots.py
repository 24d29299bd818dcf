"""Training pictures with matplotlib: loss and accuracy curves, gradient flow, image grids,
first-layer filters, and activation / gradient maps of one layer.

Every function builds a `matplotlib.figure.Figure` without pyplot (no global figure list,
no GUI: safe under the Agg backend, on a server, in a training loop), returns it, and,
given `path=`, also saves it there (PNG, SVG, PDF by the file's extension). In Jupyter a
returned figure is drawn when it is the cell's last expression (or use `display(fig)`).
"""

from collections import namedtuple
from collections.abc import Mapping
import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

__all__ = [
    "plot_training",
    "plot_grad_flow",
    "plot_grad_flow_history",
    "GradFlowRecorder",
    "GradStats",
    "grad_stats",
    "visualize_grid",
    "plot_filters",
    "plot_activations",
]

#: mean and max of |gradient| over one array
GradStats = namedtuple("GradStats", ["mean", "max"])


# ----- helpers ---------------------------------------------------------------------------


def _figure(width, height):
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _finish(fig, path):
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def _history(run, key):
    values = getattr(run, key, None)
    if values is None and isinstance(run, Mapping):
        values = run.get(key)
    return [] if values is None else [float(v) for v in values]


def _is_run(obj):
    return hasattr(obj, "loss_history") or (isinstance(obj, Mapping) and "loss_history" in obj)


def _running_mean(values, window):
    values = np.asarray(values, dtype=np.float64)
    cumsum = np.cumsum(np.insert(values, 0, 0.0))
    out = np.empty_like(values)
    n = len(values)
    for i in range(n):  # a centred window, shorter at both ends
        lo, hi = max(0, i - window // 2), min(n, i - window // 2 + window)
        out[i] = (cumsum[hi] - cumsum[lo]) / (hi - lo)
    return out


# ----- loss and accuracy -----------------------------------------------------------------


def plot_training(solver, path=None, smooth=True, title=None, accuracy="Classification accuracy"):
    """The two-panel training plot: loss per iteration (top) and train / validation
    accuracy per epoch (bottom).

    solver: anything with `loss_history`, `train_acc_history`, `val_acc_history` (a Solver,
    or a dict with those keys), or a dict {label: solver} to compare several runs in the
    same two panels (each run gets its own colour).
    smooth: also draw a centred running mean of the loss (window = 1/20 of the run, at
    least 2), so the trend stands out from the minibatch noise.

    Lines: per run, the raw loss (markers) and, with smooth, its running mean on the top
    axes; 'train' and 'val' accuracy on the bottom axes (labelled '<run>: train' and
    '<run>: val' when comparing runs, with a legend of run colours and line styles).
    """
    runs = (
        {"": solver} if _is_run(solver) else (dict(solver) if isinstance(solver, Mapping) else {})
    )
    if not runs or not all(_is_run(r) for r in runs.values()):
        raise TypeError(
            "plot_training needs an object with loss_history, train_acc_history "
            "and val_acc_history (a Solver), or a dict {label: solver}"
        )
    fig = _figure(8, 6)
    loss_ax, acc_ax = fig.subplots(2, 1)
    colors = [f"C{i % 10}" for i in range(len(runs))]
    single = len(runs) == 1
    for (label, run), color in zip(runs.items(), colors):
        prefix = f"{label}: " if label else ""
        loss = _history(run, "loss_history")
        smoothed = smooth and len(loss) > 0
        raw_label = "loss" if single else (f"_{label}" if smoothed else label)
        loss_ax.plot(
            np.arange(len(loss)),
            loss,
            "o",
            ms=2.5,
            color=color,
            alpha=0.35 if smooth else 0.8,
            label=raw_label,
        )
        if smoothed:
            window = max(2, len(loss) // 20)
            loss_ax.plot(
                np.arange(len(loss)),
                _running_mean(loss, window),
                "-",
                color=color,
                lw=1.8,
                label=f"running mean ({window} it.)" if single else label,
            )
        for key, style, name in (
            ("train_acc_history", "-o", "train"),
            ("val_acc_history", "--s", "val"),
        ):
            acc = _history(run, key)
            acc_ax.plot(
                np.arange(len(acc)),
                acc,
                style,
                ms=4,
                color=color if not single else ("C0" if name == "train" else "C1"),
                label=f"{prefix}{name}",
            )
    loss_ax.set(title="Training loss", xlabel="iteration", ylabel="loss")
    acc_ax.set(title=accuracy, xlabel="epoch", ylabel="accuracy")
    acc_ax.xaxis.get_major_locator().set_params(integer=True)
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
    loss_ax.legend(fontsize="small", loc="best")
    if single:
        acc_ax.legend(fontsize="small", loc="best")
    else:  # one entry per run (its colour) and one per line style, not runs x styles
        handles = [Line2D([], [], color=c, lw=2, label=label) for label, c in zip(runs, colors)]
        handles += [
            Line2D([], [], color="0.4", ls="-", marker="o", ms=4, label="train"),
            Line2D([], [], color="0.4", ls="--", marker="s", ms=4, label="val"),
        ]
        acc_ax.legend(
            handles=handles, fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5)
        )
    if title:
        fig.suptitle(title)
    return _finish(fig, path)


# ----- gradient flow ---------------------------------------------------------------------


def grad_stats(source, names=None):
    """{name: GradStats(mean |grad|, max |grad|)} in layer order.

    source: a Graph (its params, after a backward), a model with `.graph`, a Solver (the
    gradients of its last step, `solver.last_grads`, if it has taken one; else its model's
    graph), or a dict {name: gradient array} (what a model's `loss(X, y)` returns).
    names: which entries to keep (for a graph, any node names, e.g. activations), in this
    order; by default every param (or every dict entry) that has a gradient.
    """
    grads = _named_grads(source, names)
    return {
        name: GradStats(float(np.mean(np.abs(g))), float(np.max(np.abs(g))))
        for name, g in grads.items()
    }


def _as_graph(source):
    for _ in range(3):  # Solver -> model -> graph
        if hasattr(source, "nodes") and hasattr(source, "params") and hasattr(source, "backward"):
            return source
        inner = getattr(source, "model", None)
        source = getattr(source, "graph", None) if inner is None else inner
        if source is None:
            return None
    return None


def _named_grads(source, names):
    last_step = getattr(source, "last_grads", None)  # a Solver that has taken a step
    if isinstance(last_step, Mapping) and last_step and all(n in last_step for n in names or ()):
        source = last_step
    if isinstance(source, Mapping):
        items = source if names is None else {n: source[n] for n in names}
        out = {}
        for name, value in items.items():
            if isinstance(value, GradStats):
                raise TypeError("expected gradient arrays, got GradStats; use the stats directly")
            if value is not None:
                out[name] = np.asarray(value, dtype=np.float64)
        return out
    graph = _as_graph(source)
    if graph is None:
        raise TypeError(
            "expected a Graph, a model with .graph, a Solver, or a dict "
            f"{{name: gradient}}; got {type(source).__name__}"
        )
    wanted = list(graph.params) if names is None else list(names)
    out = {}
    for name in wanted:
        grad = graph[name].grad
        if grad is None:
            if names is not None:
                raise ValueError(f"node {name!r} has no gradient: run forward and backward first")
            continue
        out[name] = np.asarray(grad, dtype=np.float64)
    if not out:
        raise ValueError("no gradients to plot: run forward() and backward() first")
    return out


def plot_grad_flow(graph_or_named_grads, path=None, names=None, ax=None, title=None):
    """Gradient flow: mean and max |gradient| of every layer (param), first layer on the
    left, on a log axis. A vanishing gradient shows as mean bars that drop by orders of
    magnitude towards the input; an exploding one as bars that grow.

    graph_or_named_grads: a Graph after backward(), a model (uses `model.graph`), a Solver,
    or a dict {name: gradient} such as the grads a model's `loss(X, y)` returns.
    names: the params (or, for a graph, any nodes, e.g. activations) to show, in order.
    ax: draw into these axes instead of a new figure.

    The axes hold two bar containers, labelled 'max |grad|' and 'mean |grad|'.
    """
    stats = grad_stats(graph_or_named_grads, names)
    labels = list(stats)
    means = np.array([s.mean for s in stats.values()])
    maxes = np.array([s.max for s in stats.values()])
    fig = _figure(max(5.0, 0.55 * len(labels) + 2), 4) if ax is None else ax.figure
    ax = fig.subplots() if ax is None else ax
    x = np.arange(len(labels))
    ax.bar(x, maxes, width=0.8, color="C1", alpha=0.35, label="max |grad|")
    ax.bar(x, means, width=0.5, color="C0", label="mean |grad|")
    ax.set_yscale("log")
    for i in np.flatnonzero(maxes == 0):  # nothing to draw on a log axis: say so
        ax.text(
            i, 0.02, "0", transform=ax.get_xaxis_transform(), ha="center", va="bottom", color="C3"
        )
    ax.set_xticks(
        x,
        labels,
        rotation=45 if len(labels) > 6 else 0,
        ha="right" if len(labels) > 6 else "center",
    )
    ax.set(xlabel="layer (first on the left)", ylabel="|gradient|", title=title or "Gradient flow")
    ax.grid(axis="y", which="major", alpha=0.3)
    ax.legend(fontsize="small")
    return _finish(fig, path)


class GradFlowRecorder:
    """Snapshots of gradient flow during training, for `plot_grad_flow_history`.

    Either call `record(source)` after each backward (source as for `grad_stats`), or let
    the recorder watch a model or graph: `watch(model)` adds a hook to its graph that
    records the params' gradients after every backward walk (the ones a Solver's
    training steps make), one in `every`.

    `history` is a list of {name: GradStats}, `iterations` the iteration of each snapshot.

    Examples:
        >>> rec = GradFlowRecorder(every=5).watch(model)
        >>> solver.train(); rec.unwatch()
        >>> plot_grad_flow_history(rec)
    """

    def __init__(self, names=None, every=1):
        if int(every) < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        self.names, self.every = names, int(every)
        self.history, self.iterations = [], []
        self._walks = 0
        self._graph = self._handle = None

    def record(self, source, iteration=None):
        """Take a snapshot of `source`'s gradients (always; `every` applies to `watch`).
        iteration: its x position; by default one after the previous snapshot."""
        if iteration is None:  # one after the last snapshot
            iteration = self.iterations[-1] + 1 if self.iterations else 0
        self.history.append(grad_stats(source, self.names))
        self.iterations.append(iteration)
        return self

    def watch(self, model):
        """Record the gradients after every backward of `model`'s graph (one in `every`)."""
        if self._handle is not None:
            raise RuntimeError("this recorder is already watching a model; unwatch() first")
        graph = _as_graph(model)
        if graph is None:
            raise TypeError(
                f"watch() takes a Graph, a model with .graph or a Solver, got "
                f"{type(model).__name__}"
            )
        self._graph, self._handle = graph, graph.add_hook(end=self._after_walk)
        return self

    def _after_walk(self, direction, plan):
        if direction != "backward":
            return
        if self._walks % self.every == 0:
            self.record(self._graph, iteration=self._walks)
        self._walks += 1

    def unwatch(self):
        """Stop recording."""
        if self._handle is not None:
            self._handle.remove()
            self._graph = self._handle = None
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.unwatch()

    def __len__(self):
        return len(self.history)

    def __repr__(self):
        return f"<GradFlowRecorder: {len(self)} snapshots>"


def _history_matrix(history, stat):
    iterations = getattr(history, "iterations", None)
    snapshots = list(getattr(history, "history", history))
    if not snapshots:
        raise ValueError("the gradient-flow history is empty: nothing was recorded")
    names = []
    for snap in snapshots:
        names.extend(n for n in snap if n not in names)
    index = 0 if stat == "mean" else 1
    matrix = np.full((len(names), len(snapshots)), np.nan)
    for j, snap in enumerate(snapshots):
        for name, value in snap.items():
            if not isinstance(value, GradStats):
                if np.ndim(value) == 0 and stat == "mean":  # a bare number: the mean
                    value = GradStats(float(value), float("nan"))
                else:
                    array = np.abs(np.asarray(value, dtype=np.float64))
                    value = GradStats(float(array.mean()), float(array.max()))
            matrix[names.index(name), j] = value[index]
    if iterations is None or len(iterations) != len(snapshots):
        iterations = list(range(len(snapshots)))
    return names, np.asarray(iterations), matrix


def plot_grad_flow_history(history, path=None, stat="mean", kind="heatmap", title=None):
    """How the gradient flow changed over training.

    history: a GradFlowRecorder, or a list of snapshots, one per iteration, each a dict
    {name: GradStats | gradient array | mean |grad| number}.
    stat: 'mean' or 'max' |grad|.
    kind: 'heatmap' (layers down, iterations across, colour = log10 |grad|, with a
    colour bar) or 'lines' (one line per layer over the iterations, log axis).
    """
    if stat not in ("mean", "max"):
        raise ValueError(f"stat must be 'mean' or 'max', got {stat!r}")
    if kind not in ("heatmap", "lines"):
        raise ValueError(f"kind must be 'heatmap' or 'lines', got {kind!r}")
    names, iterations, matrix = _history_matrix(history, stat)
    label = f"{stat} |grad|"
    if kind == "lines":
        fig = _figure(8, 4.5)
        ax = fig.subplots()
        colors = _layer_colors(len(names))
        for name, row, color in zip(names, matrix, colors):
            ax.plot(iterations, row, "-", color=color, lw=1.5, label=name)
        ax.set_yscale("log")
        ax.set(xlabel="iteration", ylabel=label)
        ax.grid(alpha=0.3)
        ax.legend(
            fontsize="small",
            ncol=max(1, math.ceil(len(names) / 12)),
            loc="center left",
            bbox_to_anchor=(1.01, 0.5),
        )
    else:
        fig = _figure(8, min(9.0, max(2.5, 0.28 * len(names) + 1.5)))
        ax = fig.subplots()
        with np.errstate(divide="ignore"):
            logs = np.log10(matrix)
        logs[~np.isfinite(logs)] = np.nan
        image = ax.imshow(
            logs,
            aspect="auto",
            interpolation="nearest",
            cmap="magma",
            extent=_heatmap_extent(iterations, len(names)),
        )
        ax.set_yticks(np.arange(len(names)), names)
        ax.set(xlabel="iteration", ylabel="layer (first at the top)")
        fig.colorbar(image, ax=ax, label=f"log10 {label}")
    ax.set_title(title or f"Gradient flow over training ({label})")
    return _finish(fig, path)


def _heatmap_extent(iterations, rows):
    if len(iterations) > 1:
        step = (iterations[-1] - iterations[0]) / (len(iterations) - 1)
    else:
        step = 1
    return (iterations[0] - step / 2, iterations[-1] + step / 2, rows - 0.5, -0.5)


def _layer_colors(n):
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(t) for t in np.linspace(0, 0.9, n)] if n > 1 else ["C0"]


# ----- images and filters ----------------------------------------------------------------


def visualize_grid(Xs, ubound=255.0, padding=1):
    """Tile N images into one square-ish grid image.

    Xs: (N, H, W, C) (channels last) or (N, H, W). Each image is rescaled on its own to
    [0, ubound] (its minimum to 0, its maximum to ubound; a constant image becomes
    ubound / 2); the `padding` pixels between tiles and the unused tiles are 0.
    Returns a float array (G*H + (G-1)*padding, G*W + (G-1)*padding[, C]) with
    G = ceil(sqrt(N)).
    """
    Xs = np.asarray(Xs, dtype=np.float64)
    squeeze = Xs.ndim == 3
    if squeeze:
        Xs = Xs[..., np.newaxis]
    if Xs.ndim != 4 or len(Xs) == 0:
        raise ValueError(
            f"visualize_grid needs images (N, H, W, C) or (N, H, W) with N > 0, "
            f"got shape {Xs.shape}"
        )
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    N, H, W, C = Xs.shape
    G = math.ceil(math.sqrt(N))
    grid = np.zeros((G * H + (G - 1) * padding, G * W + (G - 1) * padding, C))
    for k, image in enumerate(Xs):
        row, col = divmod(k, G)
        low, high = image.min(), image.max()
        tile = (
            np.clip(ubound * ((image - low) / (high - low)), 0, ubound)
            if high > low
            else np.full_like(image, ubound / 2)
        )
        y, x = row * (H + padding), col * (W + padding)
        grid[y : y + H, x : x + W] = tile
    return grid[..., 0] if squeeze else grid


def _conv_weights(w):
    if hasattr(w, "params") and not isinstance(w, np.ndarray):
        w = w.params["W1"]  # a model: its first conv layer
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 4:
        raise ValueError(f"plot_filters needs conv weights (F, C, HH, WW), got shape {w.shape}")
    return w


def plot_filters(w, path=None, title=None, padding=1):
    """The filters of a conv layer as one grid image.

    w: weights (F, C, HH, WW) (or a model: its params['W1']). C == 3 is drawn in colour
    (channels last), C == 1 in grayscale; any other C shows each channel of each filter
    as its own grayscale tile (F * C tiles). Each tile is rescaled to its own range and
    drawn on the figure's background. Returns the Figure (one axes, one image).
    """
    w = _conv_weights(w)
    F, C, HH, WW = w.shape
    images = w.transpose(0, 2, 3, 1)  # channels last
    if C not in (1, 3):
        images = w.reshape(F * C, HH, WW, 1)
    grid = visualize_grid(images, ubound=1.0, padding=padding)
    # Opaque tiles on a transparent background, so a black pixel at a tile's edge is not
    # lost in the black padding: tiles of a constant image are ubound / 2, never 0.
    occupied = visualize_grid(np.ones((len(images), HH, WW)), ubound=2.0, padding=padding) > 0
    rgba = np.zeros(grid.shape[:2] + (4,))
    rgba[..., :3] = grid if grid.shape[-1] == 3 else grid[..., :1]
    rgba[..., 3] = occupied
    rgba = rgba[: np.flatnonzero(occupied.any(axis=1))[-1] + 1]  # drop empty rows of tiles
    tiles = math.ceil(math.sqrt(len(images)))
    side = min(8.0, max(3.2, 0.45 * tiles * max(HH, WW) / 3))
    fig = _figure(side, side * rgba.shape[0] / rgba.shape[1] + 0.5)
    ax = fig.subplots()
    ax.imshow(rgba, interpolation="nearest")
    ax.axis("off")
    what = f"{F} filters of {C} x {HH} x {WW}" + (
        "\n(one tile per channel)" if C not in (1, 3) else ""
    )
    ax.set_title(title or f"Conv filters\n{what}", fontsize="medium")
    return _finish(fig, path)


# ----- activation and gradient maps ------------------------------------------------------


def _maps(array, index):
    """(channels, H, W) maps of one example of a node's value or gradient."""
    a = np.asarray(array, dtype=np.float64)
    if a.ndim == 0:
        raise ValueError("a scalar node has no maps to show")
    one = a[index] if a.ndim >= 2 else a
    if one.ndim == 3:  # (C, H, W)
        return one
    if one.ndim == 2:  # (H, W)
        return one[np.newaxis]
    flat = one.reshape(-1)  # a vector: fold into a near-square map, padded with NaN
    side = math.ceil(math.sqrt(flat.size))
    folded = np.full(side * side, np.nan)
    folded[: flat.size] = flat
    return folded.reshape(1, side, side)


def _mosaic(maps, max_channels, padding=1):
    """Tile (C, H, W) maps into one 2-D array with NaN gaps (drawn blank)."""
    maps = maps[:max_channels]
    C, H, W = maps.shape
    cols = math.ceil(math.sqrt(C))
    rows = math.ceil(C / cols)
    out = np.full((rows * (H + padding) - padding, cols * (W + padding) - padding), np.nan)
    for k, m in enumerate(maps):
        r, c = divmod(k, cols)
        out[
            r * (H + padding) : r * (H + padding) + H, c * (W + padding) : c * (W + padding) + W
        ] = m
    return out, rows, cols


def plot_activations(
    graph, node_name, feeds=None, index=0, path=None, max_channels=16, backward=True, loss=None
):
    """Per-channel maps of one layer's activations (node.value) and their gradients
    (node.grad) for example `index` of the batch.

    graph: a Graph (or a model: its `.graph`). feeds: if given, run `graph.forward(feeds)`
    and, with backward, `graph.backward(loss)` first (loss: the node to start from; by
    default the single sink). Without feeds the values and gradients already on the graph
    are drawn. A (N, C, H, W) node gives C maps (the first max_channels); (N, D) is folded
    into one square map.

    Axes: activation maps and their colour bar; then, if the node has a gradient, the
    gradient maps and their colour bar. Maps with both signs (gradients, pre-relu values)
    use a diverging palette, red positive, blue negative, white 0; others viridis.
    """
    graph = _as_graph(graph) or graph
    node = graph[node_name]
    if feeds is not None:
        if loss is not None:
            graph.run(loss, feeds)
        else:
            graph.forward(feeds)
        if backward:
            graph.backward(loss)
    if node.value is None:
        raise ValueError(f"node {node.name!r} has no value: pass feeds, or run forward first")
    batch = np.shape(node.value)[0] if np.ndim(node.value) >= 2 else 1
    if not -batch <= index < batch:
        raise IndexError(f"index {index} is outside the batch of {batch} of node {node.name!r}")
    panels = [("value", _maps(node.value, index))]
    if node.grad is not None and np.ndim(node.grad) > 0:
        panels.append(("grad", _maps(node.grad, index)))
    shown = min(len(panels[0][1]), max_channels)
    fig = _figure(4.2 * len(panels) + 0.6, 4.2)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (kind, maps) in zip(axes, panels):
        mosaic, rows, cols = _mosaic(maps, max_channels)
        finite = mosaic[np.isfinite(mosaic)]
        signed = kind == "grad" or (finite.size and finite.min() < 0 < finite.max())
        if signed:  # a diverging palette, white at 0
            limit = np.abs(finite).max() if finite.size else 1.0
            limit = limit if limit > 0 else 1.0
            image = ax.imshow(
                mosaic, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest"
            )
        else:
            image = ax.imshow(mosaic, cmap="viridis", interpolation="nearest")
        ax.set_title(
            f"{node.name} ({node.op}): activations"
            if kind == "value"
            else f"d loss / d {node.name}",
            fontsize="medium",
        )
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(
            f"{shown} of {len(maps)} channel(s), example {index}"
            if len(maps) > 1
            else f"example {index}"
        )
        fig.colorbar(image, ax=ax, shrink=0.8)
    return _finish(fig, path)
