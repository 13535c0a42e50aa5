"""What the cluster pictures show, as tables: the scatter's points and the galleries' samples.

A picture's "error" is a wrong prediction (classification) or, for regression, a squared
error in the fold's worst 10 % (:data:`REGRESSION_ERROR_QUANTILE`): regression has no wrong
answers, only worse ones.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from hetcv.clustering import pca_scores
from hetcv.columns import feature_columns
from hetcv.figure_style import new_figure, save_figures, show_image
from hetcv.io import read_per_sample
from hetcv.tables import select

GALLERY_IMAGES = 8
REGRESSION_ERROR_QUANTILE = 0.9


def error_flags(table: pd.DataFrame, task: str) -> np.ndarray:
    """Which samples the pictures mark as errors.

    Parameters
    ----------
    table : DataFrame
        Per-sample rows with ``correct`` (classification) or ``sq_error`` (regression).
    task : {"classification", "regression"}

    Returns
    -------
    ndarray of bool, shape (len(table),)
    """
    if task == "classification":
        return ~table["correct"].to_numpy(dtype=bool)
    squared = table["sq_error"].to_numpy()
    return squared >= np.quantile(squared, REGRESSION_ERROR_QUANTILE)


def scatter_points(
    fold: pd.DataFrame, clusters: pd.DataFrame, task: str, pca_components: int
) -> pd.DataFrame:
    """One held-out fold on the first two principal components of its features.

    These are the leading axes of the space the fold was clustered in (the same PCA).

    Parameters
    ----------
    fold : DataFrame of shape (n_held_out, ...)
        The fold's ``features.parquet``.
    clusters : DataFrame
        ``clusters_per_sample.csv`` rows of this fold (``sample_id``, ``cluster``).
    task : {"classification", "regression"}
    pca_components : int
        The clustering's ``pca_components`` (at least 2 are computed here).

    Returns
    -------
    DataFrame of shape (n_held_out, 4)
        ``pc1``, ``pc2``, ``cluster`` and ``error`` per sample, in the fold's order.
    """
    embedding = fold[feature_columns(fold.columns)].to_numpy()
    coordinates = pca_scores(embedding, max(2, pca_components))
    cluster = clusters.set_index("sample_id").loc[fold["sample_id"], "cluster"].to_numpy()
    return pd.DataFrame(
        {
            "pc1": coordinates[:, 0],
            "pc2": coordinates[:, 1],
            "cluster": cluster,
            "error": error_flags(fold, task),
        }
    )


def gallery_samples(clusters: pd.DataFrame, task: str) -> dict[int, tuple[list, list]]:
    """Each cluster's most typical samples and its worst errors.

    Parameters
    ----------
    clusters : DataFrame
        ``clusters_per_sample.csv`` rows of one sample size.
    task : {"classification", "regression"}

    Returns
    -------
    dict
        ``{cluster: (typical, worst)}``, each a list of up to :data:`GALLERY_IMAGES`
        ``sample_id``: the highest memberships, and the errors with the highest membership
        (classification) or the largest squared errors (regression).
    """
    flagged = clusters.assign(error=error_flags(clusters, task))
    worst_first = "membership" if task == "classification" else "sq_error"
    samples = {}
    for cluster, members in flagged.groupby("cluster"):
        typical = members.sort_values("membership", ascending=False)
        worst = members[members["error"]].sort_values(worst_first, ascending=False)
        samples[int(cluster)] = (
            typical["sample_id"].head(GALLERY_IMAGES).tolist(),
            worst["sample_id"].head(GALLERY_IMAGES).tolist(),
        )
    return samples


def figure_scatter(points_by_n: dict, style, dataset, selected) -> Figure:
    """2-D PCA of one fold per sample size, coloured by cluster, errors marked with ×.

    Parameters
    ----------
    points_by_n : dict of int to DataFrame
        Per n, fold 0's held-out samples with columns ``pc1, pc2, cluster, error`` (bool).
    style : dict
        Width and height per panel and the cluster palette (`new_figure`).
    dataset : str
        Shown in the suptitle with the clustering.
    selected : dict
        The clustering the labels come from, for the suptitle only.

    Returns
    -------
    figure : Figure
        One panel per sample size, in increasing n.
    """
    sizes = sorted(points_by_n)
    figure, axes = new_figure(style, columns=len(sizes))
    colours = sns.color_palette(
        style["palette"], max(int(p["cluster"].max()) for p in points_by_n.values()) + 1
    )
    for axis, n in zip(axes.flat, sizes, strict=True):
        points = points_by_n[n]
        for cluster, group in points.groupby("cluster"):
            colour = colours[int(cluster)]
            right = group[~group["error"]]
            wrong = group[group["error"]]
            axis.scatter(
                right["pc1"],
                right["pc2"],
                s=12,
                color=colour,
                alpha=0.7,
                label=f"cluster {cluster}",
            )
            axis.scatter(wrong["pc1"], wrong["pc2"], s=40, color=colour, marker="x", linewidths=1.5)
        axis.set_title(f"n = {n}, fold 0")
        axis.set_xlabel("PC 1")
        axis.set_ylabel("PC 2")
    axes.flat[0].scatter([], [], marker="x", color="black", label="error")
    axes.flat[0].legend(fontsize="x-small")
    figure.suptitle(
        f"{dataset}: held-out samples in PCA space ({selected['algorithm']}, "
        f"k = {selected['k']}); × = error"
    )
    figure.tight_layout()
    return figure


def figure_gallery(rows: list[dict], dataset: str, n: int) -> Figure:
    """For each cluster: its most typical images (left) and its worst errors (right).

    Parameters
    ----------
    rows : list of dict
        Per cluster ``{"cluster", "metric", "size_pct", "typical": [images],
        "worst": [images]}``, images as 2-D uint8 (grey) or ``(3, H, W)`` arrays.
    dataset : str
        Title prefix.
    n : int
        Sample size the clusters come from, for the title.

    Returns
    -------
    figure : Figure
        One row of thumbnails per cluster.
    """
    per_side = max(max(len(r["typical"]), len(r["worst"])) for r in rows)
    figure = Figure(figsize=(0.9 * (2 * per_side + 1), 1.1 * len(rows) + 0.6))
    axes = figure.subplots(len(rows), 2 * per_side + 1, squeeze=False)
    for row_axes, row in zip(axes, rows, strict=True):
        for axis in row_axes:
            axis.axis("off")
        for i, image in enumerate(row["typical"]):
            show_image(row_axes[i], image)
        for i, image in enumerate(row["worst"]):
            show_image(row_axes[per_side + 1 + i], image)
        row_axes[0].set_title(
            f"cluster {row['cluster']}: metric {row['metric']:.2f}, {row['size_pct']:.0f} %",
            fontsize="small",
            loc="left",
        )
    figure.suptitle(
        f"{dataset}, n = {n}: left, most typical images of each cluster (highest "
        "membership); right, its worst errors",
        fontsize="medium",
    )
    figure.tight_layout()
    return figure


def run_cluster_pictures_job(inputs: dict, outputs: dict, params: dict) -> None:
    """The cluster_pictures rule: the PCA scatter (fold 0 per n) and the galleries (largest n).

    Parameters
    ----------
    inputs : dict
        ``export`` (``clusters_per_sample.csv``), ``first_folds`` (fold 0's features per n),
        ``images``, ``manifest`` and ``cluster_stats`` (the summary table).
    outputs : dict
        ``{scatter,gallery}_{png,pdf}``.
    params : dict
        ``dataset``, ``task``, ``selected``, ``style`` and ``pca_components``.
    """
    dataset, task, selected, style = (params[k] for k in ("dataset", "task", "selected", "style"))
    per_sample = read_per_sample(inputs["clusters_per_sample"])
    points_by_n = {}
    for path in inputs["first_folds"]:
        fold = pd.read_parquet(path)
        n = int(fold["n"].iloc[0])
        at_fold0 = per_sample[(per_sample["n"] == n) & (per_sample["fold"] == 0)]
        points_by_n[n] = scatter_points(fold, at_fold0, task, params["pca_components"])

    largest = int(per_sample["n"].max())
    pixels = np.load(inputs["images"], mmap_mode="r")
    row_of = pd.Series(
        np.arange(len(pixels)), index=pd.read_parquet(inputs["manifest"])["sample_id"]
    )
    stats = select(pd.read_parquet(inputs["cluster_stats"]), selected)
    stats = stats[stats["n"] == largest].set_index("cluster")
    gallery = [
        {
            "cluster": cluster,
            "metric": stats.loc[cluster, "metric"],
            "size_pct": stats.loc[cluster, "size_pct"],
            "typical": [pixels[row_of[sample]] for sample in typical],
            "worst": [pixels[row_of[sample]] for sample in worst],
        }
        for cluster, (typical, worst) in gallery_samples(
            per_sample[per_sample["n"] == largest], task
        ).items()
    ]
    made = {
        "scatter": figure_scatter(points_by_n, style, dataset, selected),
        "gallery": figure_gallery(gallery, dataset, largest),
    }
    save_figures(made, outputs, style)
