"""Drawing and teaching: graphviz drawings with values, gradients and gradient flow,
step-by-step forward and backward frames and their player, backprop through time
(`plot_bptt`, `unroll`), comparisons of two moments, the notebook widget (`Widget`,
needs anywidget), and export (SVG, PNG, DOT, HTML, GIF)."""

from .bptt import plot_bptt, step_grad_norms, unroll
from .compare import Snapshot, diff, snapshot
from .draw import View, draw, edge_gradients, gradient_flag
from .export import export
from .html import export_html
from .render import GraphvizNotFoundError
from .steps import Frame, backward_steps, export_gif, export_pngs, forward_steps
from .plots import (
    GradFlowRecorder,
    grad_stats,
    plot_activations,
    plot_filters,  # noqa: F401
    plot_grad_flow,
    plot_grad_flow_history,
    plot_training,
    visualize_grid,
)

__all__ = [
    "draw",
    "export",
    "backward_steps",
    "forward_steps",
    "Frame",
    "export_html",
    "export_gif",
    "export_pngs",
    "GraphvizNotFoundError",
    "View",
    "edge_gradients",
    "gradient_flag",
    "snapshot",
    "diff",
    "Snapshot",
    "Widget",
    "plot_bptt",
    "step_grad_norms",
    "unroll",
]


def __getattr__(name):
    # The widget needs anywidget (an optional extra): imported when first asked for.
    if name == "Widget":
        from .widget import Widget

        return Widget
    raise AttributeError(f"module 'graphnet.viz' has no attribute {name!r}")
