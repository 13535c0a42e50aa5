"""The shared style of every figure: the panel grid, the metric's axis, saving as PNG and PDF."""

from __future__ import annotations

import numpy as np
import seaborn as sns
from matplotlib.figure import Figure

from hetcv.io import atomic_path
from hetcv.metrics import LABEL


def new_figure(style: dict, columns: int = 1, rows: int = 1):
    """A figure and its grid of axes, each panel ``style['width'] × style['height']`` inches.

    Figures are made without pyplot, so no backend is chosen or needed, and none stays
    registered after it is saved. Sets seaborn's ``whitegrid`` theme.

    Parameters
    ----------
    style : dict
        The ``report`` config section: ``dpi``, ``width``, ``height`` and ``palette``.
    columns, rows : int, default 1
        Shape of the panel grid.

    Returns
    -------
    figure : Figure
    axes : ndarray of Axes of shape (rows, columns)
    """
    sns.set_theme(style="whitegrid", context="notebook")
    figure = Figure(figsize=(style["width"] * columns, style["height"] * rows))
    return figure, figure.subplots(rows, columns, squeeze=False)


def save(figure: Figure, png: str, pdf: str, style: dict) -> None:
    """Write the figure as PNG (at ``style['dpi']``) and PDF, atomically, tightly cropped.

    Parameters
    ----------
    figure : Figure
        What to write.
    png, pdf : str
        Destination paths; each file's format is taken from its extension.
    style : dict
        Only ``dpi`` is read, for the PNG.
    """
    for path, options in ((png, {"dpi": style["dpi"]}), (pdf, {})):
        with atomic_path(path) as temporary:
            figure.savefig(
                temporary, format=str(path).rsplit(".", 1)[1], bbox_inches="tight", **options
            )


def metric_label(metric: str) -> str:
    """The plotted axis: the classification metric, or the paper's error NRMSE = 1 − metric.

    Parameters
    ----------
    metric : str
        The metric's name (:data:`hetcv.metrics.METRICS`).

    Returns
    -------
    label : str
        E.g. ``"test accuracy"``, ``"test AUROC"`` or ``"test NRMSE (1 − metric)"``.
    """
    return "test NRMSE (1 − metric)" if metric == "nrmse" else f"test {LABEL[metric]}"


def as_plotted(values, metric: str):
    """The classification metric as stored; the error NRMSE = 1 − metric (the paper).

    Parameters
    ----------
    values : float, ndarray or Series
        Metric values as stored (e.g. accuracy, or 1 − NRMSE).
    metric : str
        The metric's name; only ``nrmse`` is converted.

    Returns
    -------
    plotted : same type as ``values``
    """
    return 1.0 - values if metric == "nrmse" else values


def sample_size_axis(axis, sizes) -> None:
    """Label the x axis with the sample sizes, placed at positions 0, 1, 2, ….

    Parameters
    ----------
    axis : Axes
        Panel whose x axis is labelled.
    sizes : sequence of int
        Sample sizes in plotting order.
    """
    axis.set_xticks(range(len(sizes)), [str(n) for n in sizes])
    axis.set_xlabel("sample size n")


def show_image(axis, image: np.ndarray) -> None:
    """Draw one image: colour channels-last, greyscale on a fixed 0–255 grey map.

    Parameters
    ----------
    axis : Axes
        Target panel.
    image : ndarray of shape (3, H, W) or (H, W)
        uint8 pixels, channels first when in colour.
    """
    if image.ndim == 3:
        axis.imshow(np.moveaxis(image, 0, -1))
    else:
        axis.imshow(image, cmap="gray", vmin=0, vmax=255)


def save_figures(made: dict, outputs: dict, style: dict) -> None:
    """Write each figure of ``made`` to its ``{name}_png`` and ``{name}_pdf`` outputs."""
    for name, figure in made.items():
        save(figure, outputs[f"{name}_png"], outputs[f"{name}_pdf"], style)
