"""The top slices' figure: their held-out gaps by method, and their images."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from hetcv.figure_style import save_figures, show_image
from hetcv.io import optional_file, read_per_sample

SLICE_IMAGES = 6


def figure_slices(
    summary: pd.DataFrame,
    images_by_slice: dict[int, list[np.ndarray]],
    method: str,
    style: dict,
    dataset: str,
) -> Figure:
    """The held-out gap of each method's worst slice, and the top slices' images.

    Parameters
    ----------
    summary : DataFrame
        The slices summary (:func:`hetcv.slices.dataset_slices`) at one n: ``method, slice,
        size, metric, gap, gap_low, gap_high, p_value, outcome_defined``.
    images_by_slice : dict of int to list of ndarray
        For ``method``'s ranked slices, their highest-scoring members' images; empty for a
        features source.
    method : str
        ``slices.method``, the method the images show.
    style : dict
        The report style.
    dataset : str
        Title prefix.

    Returns
    -------
    Figure
        Top: one bar per method (gap with its 95 % CI, hatched where outcome-defined); below,
        one row of images per slice of ``method``.
    """
    worst = summary[summary["slice"] == 0].sort_values("gap")
    rows = len(images_by_slice)
    figure = Figure(figsize=(style["width"], style["height"] + 1.3 * rows), layout="constrained")
    # One subfigure per row: each image row's caption is its subfigure's title, laid out
    # apart from the bar chart's axis label (a title on the row's first image overlapped it).
    parts = figure.subfigures(1 + rows, 1, height_ratios=[3] + [1.3] * rows, squeeze=False)[:, 0]
    axis = parts[0].add_subplot()
    positions = np.arange(len(worst))
    axis.barh(
        positions,
        100 * worst["gap"],
        xerr=100 * np.vstack([worst["gap"] - worst["gap_low"], worst["gap_high"] - worst["gap"]]),
        color=["0.8" if outcome else "C0" for outcome in worst["outcome_defined"]],
        hatch=None,
        capsize=3,
    )
    for position, row in zip(positions, worst.itertuples(), strict=True):
        if row.outcome_defined:
            axis.patches[position].set_hatch("//")
    axis.axvline(0, color="0.3", linewidth=0.8)
    axis.set_yticks(
        positions,
        [
            f"{row.method}{' (outcome-defined)' if row.outcome_defined else ''}"
            for row in worst.itertuples()
        ],
        fontsize="small",
    )
    axis.set_xlabel("held-out failure gap of the worst slice to the rest (points, 95 % CI)")
    n = int(summary["n"].iloc[0])
    axis.set_title(f"{dataset}, n = {n}: where it hurts (cross-fitted)", fontsize="medium")
    shown = summary[summary["method"] == method].set_index("slice")
    for row, (rank, images) in enumerate(sorted(images_by_slice.items()), start=1):
        panels = parts[row].subplots(1, SLICE_IMAGES, squeeze=False)[0]
        for column, panel in enumerate(panels):
            panel.axis("off")
            if column < len(images):
                show_image(panel, images[column])
        slice_row = shown.loc[rank]
        parts[row].suptitle(
            f"{method} slice {rank}: {slice_row['size']:.0f} per fold, metric "
            f"{slice_row['metric']:.2f}, gap {100 * slice_row['gap']:+.1f} points "
            f"(p {slice_row['p_value']:.2g})",
            fontsize="small",
            x=0.01,
            ha="left",
        )
    return figure


def run_slices_figure_job(inputs: dict, outputs: dict, params: dict) -> None:
    """The slices_figure rule: each method's worst slice and ``slices.method``'s images.

    Parameters
    ----------
    inputs : dict
        ``per_sample`` (``slices_per_sample.csv``), ``slices`` (the summary), ``manifest`` and
        ``images`` (empty for a features source).
    outputs : dict
        ``slices_png`` and ``slices_pdf``.
    params : dict
        ``dataset``, ``style`` and ``method`` (``slices.method``).
    """
    summary = pd.read_parquet(inputs["slices"])
    largest = int(summary["n"].max())
    summary = summary[summary["n"] == largest]
    images_by_slice = {}
    if images := optional_file(inputs["images"]):
        pixels = np.load(images, mmap_mode="r")
        row_of = pd.Series(
            np.arange(len(pixels)), index=pd.read_parquet(inputs["manifest"])["sample_id"]
        )
        per_sample = read_per_sample(inputs["slices_per_sample"])
        shown = per_sample[per_sample["n"] == largest].query("method == @params['method']")
        for rank in sorted(summary.loc[summary["method"] == params["method"], "slice"]):
            top = shown[shown["slice"] == rank].nlargest(SLICE_IMAGES, "score")
            images_by_slice[int(rank)] = [pixels[row_of[sample]] for sample in top["sample_id"]]
    figure = figure_slices(
        summary, images_by_slice, params["method"], params["style"], params["dataset"]
    )
    save_figures({"slices": figure}, outputs, params["style"])
