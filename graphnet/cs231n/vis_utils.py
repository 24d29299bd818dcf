"""The course's `vis_utils` module: visualize_grid (graphnet.viz), which tiles images into one
grid image, as the ConvolutionalNetworks notebook uses it to show the first-layer filters."""

from ..viz.plots import visualize_grid  # noqa: F401

__all__ = ["visualize_grid"]
