"""The paper's Figures 2–5 and the pictures it lacked, from the summary tables.

Each ``figure_*`` function returns a matplotlib Figure; ``save`` writes it as PNG and PDF.
``style`` is the ``report`` config block: ``dpi``, ``width`` and ``height`` (inches, one
panel) and ``palette`` (a seaborn palette name).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from hetcv.columns import NULL_SETTING
from hetcv.io import atomic_path
from hetcv.metrics import LABEL
from hetcv.stats import PAPER_CV_GUIDELINE
from hetcv.tables import select

# Clinical-chemistry guide for CV (Cui 1989, quoted by the paper) and the paper's own line.
CV_BANDS = (
    (0, 10, "very good", "#d9f0d3"),
    (10, 20, "good", "#f7f7d0"),
    (20, 30, "acceptable", "#fde0c5"),
    (30, None, "not acceptable", "#f4c7c3"),
)
VALIDITY_PANELS = {
    "sse": "Within-cluster SSE (elbow)",
    "silhouette": "Silhouette (higher is better)",
    "calinski_harabasz": "Calinski–Harabasz (higher is better)",
    "davies_bouldin": "Davies–Bouldin (lower is better)",
    "fpc": "Fuzzy partition coefficient (fcm)",
    "stability_ari": "Stability: mean ARI between repeats",
}


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


def cluster_bands(axis, rows, centre, low, high, style) -> dict:
    """One line per cluster across the sample sizes, with a shaded band.

    A cluster empty in every run at some n has no point there, and its legend entry says so.

    Parameters
    ----------
    axis : Axes
        Panel to draw into.
    rows : DataFrame
        Summary rows of one (algorithm, k): ``n, cluster`` and optionally ``empty_runs, runs``.
    centre, low, high : callable
        Map a cluster's rows (sorted by n) to y values: the line, and the band's two edges.
    style : dict
        Its ``palette`` colours the clusters.

    Returns
    -------
    position : dict of int to int
        The x position of each sample size.
    """
    sizes = sorted(rows["n"].unique())
    position = {n: i for i, n in enumerate(sizes)}
    colours = sns.color_palette(style["palette"], int(rows["cluster"].max()) + 1)
    for cluster, group in rows.groupby("cluster"):
        group = group.sort_values("n")
        x = group["n"].map(position)
        lower, upper = low(group), high(group)
        colour = colours[int(cluster)]
        label = f"cluster {cluster}"
        if "empty_runs" in group and (group["empty_runs"] == group["runs"]).any():
            empty_at = group.loc[group["empty_runs"] == group["runs"], "n"]
            label += f" (empty at n = {', '.join(map(str, empty_at))})"
        axis.plot(x, centre(group), marker="o", color=colour, label=label)
        axis.fill_between(
            x,
            np.minimum(lower, upper),
            np.maximum(lower, upper),
            color=colour,
            alpha=0.15,
            linewidth=0,
        )
    sample_size_axis(axis, sizes)
    return position


def figure2(clusters, cv, selected, metric, style, dataset) -> Figure:
    """The paper's Figure 2: per-cluster test metric vs sample size, whole-set metric highlighted.

    Each cluster (numbered by size, 0 = largest) is a line with its 95 % CI band (Wilson's for
    accuracy); grey bars beside each n show where each cluster's metric falls under the
    permutation null; the thick blue line is the whole held-out set's metric.

    Parameters
    ----------
    clusters : DataFrame
        ``clusters.parquet``: ``metric, ci_low, ci_high, null_band_low, null_band_high``.
    cv : DataFrame
        ``cv.parquet``, read for the whole-set ``test_metric``.
    selected : dict
        The (algorithm, k) plotted; named in the title.
    metric : str
        The metric's name; see `as_plotted`.
    style : dict
        The ``report`` config section; see `new_figure`.
    dataset : str
        Dataset name for the title.

    Returns
    -------
    figure : Figure
        One panel.
    """
    figure, axes = new_figure(style)
    axis = axes[0, 0]
    position = cluster_bands(
        axis,
        select(clusters, selected),
        centre=lambda g: as_plotted(g["metric"], metric),
        low=lambda g: as_plotted(g["ci_low"], metric),
        high=lambda g: as_plotted(g["ci_high"], metric),
        style=style,
    )
    chosen = select(clusters, selected)
    for n, at_n in chosen.groupby("n"):
        # Where each cluster's metric falls under the permutation null: the spread that chance
        # alone gives clusters of these sizes.
        axis.vlines(
            np.full(len(at_n), position[n]) + 0.08,
            as_plotted(at_n["null_band_low"], metric),
            as_plotted(at_n["null_band_high"], metric),
            color="grey",
            linewidth=5,
            alpha=0.35,
            label="null band of each cluster" if n == chosen["n"].min() else None,
        )
    whole = select(cv, selected).sort_values("n")
    axis.plot(
        whole["n"].map(position),
        as_plotted(whole["test_metric"], metric),
        color="#1f4e9c",
        linewidth=3.5,
        marker="s",
        label="whole held-out set",
    )
    axis.set_ylabel(f"per-cluster {metric_label(metric)}")
    axis.set_title(
        f"{dataset}: {metric_label(metric)} of each cluster "
        f"({selected['algorithm']}, k = {selected['k']}), 95 % CI"
    )
    axis.legend(fontsize="small", ncol=2)
    return figure


def figure3(clusters, selected, style, dataset) -> Figure:
    """The paper's Figure 3: cluster sizes (% of the held-out samples) vs sample size, ± sd.

    A dotted line marks equal sizes (100 / number of clusters).

    Parameters
    ----------
    clusters : DataFrame
        ``clusters.parquet``; reads ``size_pct`` and ``size_pct_sd`` (a missing sd counts 0).
    selected : dict
        Which (algorithm, k) to show.
    style : dict
        Report style (`new_figure`); its palette colours the clusters.
    dataset : str
        Opens the title.

    Returns
    -------
    figure : Figure
        Sizes in percent, mean over folds and repeats.
    """
    figure, axes = new_figure(style)
    axis = axes[0, 0]
    rows = select(clusters, selected)
    cluster_bands(
        axis,
        rows,
        centre=lambda g: g["size_pct"],
        low=lambda g: g["size_pct"] - g["size_pct_sd"].fillna(0),
        high=lambda g: g["size_pct"] + g["size_pct_sd"].fillna(0),
        style=style,
    )
    axis.axhline(100 / rows["cluster"].nunique(), color="grey", linestyle=":", label="equal sizes")
    axis.set_ylabel("cluster size (% of held-out samples)")
    axis.set_title(f"{dataset}: cluster sizes, mean ± sd over folds and repeats")
    axis.legend(fontsize="small", ncol=2)
    return figure


def figure4(cv, selected, style, dataset) -> Figure:
    """The paper's Figure 4: raw and debiased CV vs sample size, against the noise floor.

    Both CVs carry their 95 % CIs (the raw CV's for its expectation); the grey area is the
    permutation-null CV up to its 95th percentile; the background bands are the
    clinical-chemistry guide (Cui 1989) and the dashed line the paper's 5 % guideline.

    Parameters
    ----------
    cv : DataFrame
        ``cv.parquet`` with ``cv``, ``debiased_cv``, their ``_ci_low`` / ``_ci_high``,
        ``null_cv`` and ``null_cv_q95``.
    selected : dict
        Chooses the rows; only the selected clustering has the CIs.
    style : dict
        Panel size for `new_figure` (the guide bands have fixed colours).
    dataset : str
        Named in the title.

    Returns
    -------
    figure : Figure
        One panel, y axis in percent.
    """
    figure, axes = new_figure(style)
    axis = axes[0, 0]
    rows = select(cv, selected).sort_values("n")
    x = np.arange(len(rows))
    plotted = rows[["cv", "cv_ci_high", "debiased_cv_ci_high", "null_cv_q95"]].to_numpy()
    top = max(40.0, float(np.nanmax(plotted)) * 1.1)
    for low, high, label, colour in CV_BANDS:
        axis.axhspan(
            low, high if high is not None else top, color=colour, zorder=0, label=f"CV {label}"
        )
    axis.axhline(
        PAPER_CV_GUIDELINE,
        color="black",
        linestyle="--",
        linewidth=1,
        label="paper's 5 % guideline",
    )
    axis.fill_between(
        x,
        0,
        rows["null_cv_q95"],
        color="grey",
        alpha=0.35,
        label="noise floor (null CV, up to 95th pct.)",
    )
    axis.plot(x, rows["null_cv"], color="grey", linestyle=":")
    for offset, column, colour, label in (
        (-0.06, "cv", "#1f4e9c", "raw CV, the paper's (95 % CI of its expectation)"),
        (0.06, "debiased_cv", "#c0392b", "debiased CV: noise removed (95 % CI)"),
    ):
        # The raw CV's interval is for its expectation at this design (it holds the estimate by
        # construction); the debiased CV's for the clusters' true CV.
        error = np.vstack(
            [rows[column] - rows[f"{column}_ci_low"], rows[f"{column}_ci_high"] - rows[column]]
        )
        axis.errorbar(
            x + offset,
            rows[column],
            yerr=np.abs(error),
            color=colour,
            marker="o",
            linewidth=2,
            capsize=4,
            label=label,
        )
    # 1 − NRMSE can fall below 0 for a poor regression model; its CV is then negative.
    bottom = min(0.0, float(np.nanmin(rows[["cv", "cv_ci_low"]].to_numpy())) * 1.1)
    axis.set_ylim(bottom, top)
    sample_size_axis(axis, rows["n"].tolist())
    axis.set_ylabel("coefficient of variation of cluster metrics (%)")
    axis.set_title(f"{dataset}: heterogeneity of performance across clusters")
    axis.legend(fontsize="x-small", loc="upper right")
    return figure


def figure5(cv, fold_cv, correlation, selected, metric, style, dataset) -> Figure:
    """The paper's Figure 5: test metric vs CV, one point per sample size, faint per fold.

    The Pearson r and permutation p of every correlation level are printed in a corner.

    Parameters
    ----------
    cv : DataFrame
        ``cv.parquet``: ``n, cv, test_metric`` give the large, labelled points.
    fold_cv : DataFrame
        ``fold_cv.parquet``: one grey point per (n, fold).
    correlation : DataFrame
        ``correlation.parquet``: ``level, n_points, pearson, pearson_perm_p``.
    selected : dict
        The (algorithm, k) whose CV is plotted.
    metric : str
        y axis: the classification metric, or NRMSE for regression.
    style : dict
        See `new_figure`.
    dataset : str
        Goes in the title.

    Returns
    -------
    figure : Figure
        CV (%) on x, the metric on y.
    """
    figure, axes = new_figure(style)
    axis = axes[0, 0]
    folds = select(fold_cv, selected)
    axis.scatter(
        folds["cv"],
        as_plotted(folds["test_metric"], metric),
        color="grey",
        alpha=0.35,
        s=18,
        label="one fold",
    )
    rows = select(cv, selected).sort_values("n")
    y = as_plotted(rows["test_metric"], metric)
    axis.scatter(rows["cv"], y, color="#1f4e9c", s=60, zorder=3, label="one sample size")
    for cv_value, y_value, n in zip(rows["cv"], y, rows["n"], strict=True):
        axis.annotate(
            f"n={n}",
            (cv_value, y_value),
            textcoords="offset points",
            xytext=(5, 4),
            fontsize="small",
        )
    lines = []
    for _, row in correlation.iterrows():
        lines.append(
            f"{row['level'].replace('_', ' ')} ({row['n_points']} pts): "
            f"Pearson r = {row['pearson']:.2f}, permutation p = "
            f"{row['pearson_perm_p']:.2g}"
        )
    axis.text(
        0.02,
        0.02,
        "\n".join(lines),
        transform=axis.transAxes,
        fontsize="small",
        va="bottom",
        bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"},
    )
    axis.set_xlabel("coefficient of variation of cluster metrics (%)")
    axis.set_ylabel(metric_label(metric))
    axis.set_title(f"{dataset}: {metric_label(metric)} against heterogeneity (CV)")
    axis.legend(fontsize="small", loc="upper right")
    return figure


def figure_validity(validity, style, dataset) -> Figure:
    """Cluster-number exploration: one panel per index, one line per algorithm (largest n).

    Values are means over folds and repeats; an index missing for an algorithm (``fpc``
    outside fuzzy c-means) leaves no line.

    Parameters
    ----------
    validity : DataFrame
        ``validity.parquet``: ``algorithm, k, n`` and the indices of `VALIDITY_PANELS`.
    style : dict
        Report style for a 3 × 2 grid of panels; ``palette`` colours the algorithms.
    dataset : str
        Used in the suptitle.

    Returns
    -------
    figure : Figure
        Six panels, k on every x axis.
    """
    largest = validity["n"].max()
    rows = validity[validity["n"] == largest]
    figure, axes = new_figure(style, columns=3, rows=2)
    for axis, (column, title) in zip(axes.flat, VALIDITY_PANELS.items(), strict=True):
        data = rows.dropna(subset=[column])
        if len(data):
            sns.lineplot(
                data=data,
                x="k",
                y=column,
                hue="algorithm",
                marker="o",
                ax=axis,
                palette=style["palette"],
            )
        axis.set_title(title, fontsize="medium")
        axis.set_ylabel("")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.suptitle(
        f"{dataset}: choosing the number of clusters (n = {largest}, mean over folds and repeats)"
    )
    figure.tight_layout()
    return figure


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


def figure_subgroups(shares: pd.DataFrame, style, dataset) -> Figure:
    """Heat map of subgroup share (%) per cluster, one panel per sample size.

    Parameters
    ----------
    shares : DataFrame
        ``n, subgroup, cluster, share`` (percent of the cluster's samples); absent
        combinations are drawn as 0.
    style : dict
        Size of each heat-map panel; see `new_figure`.
    dataset : str
        Named in the suptitle.

    Returns
    -------
    figure : Figure
        Subgroups as rows and clusters as columns of each heat map.
    """
    sizes = sorted(shares["n"].unique())
    figure, axes = new_figure(style, columns=len(sizes))
    for axis, n in zip(axes.flat, sizes, strict=True):
        grid = (
            shares[shares["n"] == n]
            .pivot(index="subgroup", columns="cluster", values="share")
            .reindex(
                index=sorted(shares["subgroup"].unique()),
                columns=sorted(shares["cluster"].unique()),
            )
            .fillna(0.0)
        )
        sns.heatmap(
            grid,
            annot=True,
            fmt=".0f",
            cmap="rocket_r",
            cbar=False,
            ax=axis,
            annot_kws={"fontsize": "x-small"},
        )
        axis.grid(False)
        axis.set_title(f"n = {n}")
    figure.suptitle(f"{dataset}: share of each subgroup in each cluster (% of the cluster)")
    figure.tight_layout()
    return figure


def figure_validation(table: pd.DataFrame, style: dict) -> Figure:
    """The slice-discovery benchmark: precision@10 per setting and the null's rejections.

    Left: each method's precision@10 on the test digit per planted setting, the mean over
    seeds with its 95 % t interval; right: the share of seeds in which each method's worst
    slice is significantly worse on the held-out half, per setting (with nothing planted, the
    false-positive rate; the dashed line is 5 %).

    Parameters
    ----------
    table : DataFrame
        :func:`hetcv.validation.scored_table`: ``setting, draw, method, precision_at_10,
        significant``.
    style : dict
        Report style, for two panels side by side.

    Returns
    -------
    figure : Figure
    """
    from scipy import stats

    figure, axes = new_figure(style, columns=2)
    recovery_axis, null_axis = axes[0]
    settings = list(dict.fromkeys(table["setting"]))
    nulls = set(table.loc[table["null"], "setting"]) if "null" in table else {NULL_SETTING}
    planted = [s for s in settings if s not in nulls]
    methods = list(dict.fromkeys(table["method"]))
    colours = dict(zip(methods, sns.color_palette(style["palette"], len(methods)), strict=True))
    width = 0.8 / len(methods)
    for offset, method in enumerate(methods):
        rows = table[table["method"] == method]
        grouped = rows.groupby("setting")["precision_at_10"]
        mean = grouped.mean().reindex(planted)
        count = grouped.count().reindex(planted)
        spread = grouped.std().reindex(planted)
        half = stats.t.ppf(0.975, np.maximum(count - 1, 1)) * spread / np.sqrt(count)
        positions = np.arange(len(planted)) + (offset - (len(methods) - 1) / 2) * width
        recovery_axis.errorbar(
            positions, mean, yerr=half, fmt="o", color=colours[method], label=method, capsize=2
        )
        rate = rows.groupby("setting")["significant"].mean().reindex(settings)
        null_axis.bar(
            np.arange(len(settings)) + (offset - (len(methods) - 1) / 2) * width,
            rate,
            width,
            color=colours[method],
        )
    recovery_axis.set_xticks(range(len(planted)), planted, rotation=30)
    recovery_axis.set_ylim(-0.05, 1.05)
    recovery_axis.set_ylabel("precision@10 for the planted group")
    recovery_axis.set_title("Test family, mean over seeds (95 % CI)")
    recovery_axis.legend(fontsize="x-small")
    null_axis.axhline(0.05, color="grey", linestyle="--", linewidth=0.8)
    null_axis.set_xticks(range(len(settings)), settings, rotation=30)
    null_axis.set_ylim(0, 1.05)
    null_axis.set_ylabel("share of seeds with a significant slice")
    null_axis.set_title("Held-out significance (p < 0.05)")
    figure.tight_layout()
    return figure


def figure_metadata(profile: pd.DataFrame, style: dict, dataset: str) -> Figure:
    """What each cluster holds at the largest n: one panel per metadata column.

    Parameters
    ----------
    profile : DataFrame
        ``metadata.parquet`` (:func:`hetcv.profiles.metadata_profiles`).
    style : dict
        Panel size and palette; see `new_figure`.
    dataset : str
        Named in the suptitle.

    Returns
    -------
    figure : Figure
        Categorical columns: each level's share of each cluster, stacked, beside the
        overall shares; numeric columns: each cluster's median and interquartile range
        against the overall median (dashed). One empty panel saying so when the source has
        no metadata columns.
    """
    if profile.empty:
        figure, axes = new_figure(style)
        axes[0, 0].axis("off")
        axes[0, 0].text(0.5, 0.5, "no metadata_columns in the source", ha="center")
        figure.suptitle(f"{dataset}: metadata per cluster")
        return figure
    largest = profile[profile["n"] == profile["n"].max()]
    columns = list(dict.fromkeys(largest["column"]))
    figure, axes = new_figure(style, columns=len(columns))
    for axis, column in zip(axes.flat, columns, strict=True):
        rows = largest[largest["column"] == column]
        first = rows.iloc[0]
        if first["kind"] == "categorical":
            grid = rows.pivot(index="cluster", columns="level", values="share").fillna(0.0)
            overall = rows.drop_duplicates("level").set_index("level")["overall_share"]
            grid.loc["all"] = overall.reindex(grid.columns).to_numpy()
            grid.index = grid.index.astype(str)
            colours = sns.color_palette(style["palette"], len(grid.columns))
            grid.plot.bar(stacked=True, ax=axis, color=colours, width=0.8, legend=True)
            axis.set_ylabel("share of the cluster (%)")
            axis.legend(title=column, fontsize="x-small", loc="upper right")
        else:
            axis.errorbar(
                rows["cluster"].astype(str),
                rows["median"],
                yerr=[rows["median"] - rows["q1"], rows["q3"] - rows["median"]],
                fmt="o",
                capsize=4,
            )
            axis.axhline(first["overall_median"], linestyle="--", color="grey")
            axis.set_ylabel(f"{column}: median and IQR")
        axis.set_xlabel("cluster")
        effect = "Cramér's V" if first["kind"] == "categorical" else "ε²"
        axis.set_title(
            f"{column}: {first['test']}, {effect} {first['effect']:.2f}, "
            f"p (Holm) {first['p_holm']:.3g}",
            fontsize="small",
        )
        axis.tick_params(axis="x", labelrotation=0)
    figure.suptitle(f"{dataset}: what each cluster holds at n = {largest['n'].iloc[0]}")
    figure.tight_layout()
    return figure


PLANNED_COLUMN = {"raw_cv": "cv", "debiased_cv": "debiased_cv", "test_metric": "test_metric"}


def figure_planning(
    planning: pd.DataFrame,
    fold_cv: pd.DataFrame,
    selected: dict,
    metric: str,
    style: dict,
    dataset: str,
) -> Figure:
    """Learning curves: fold-level points, fitted law with its band, the target and n*.

    Parameters
    ----------
    planning : DataFrame
        ``planning.parquet`` (:func:`hetcv.planning.planning_table`), with its curve lists.
    fold_cv : DataFrame
        ``fold_cv.parquet``: the fold-level points.
    selected : dict
        The selected clustering, whose points are drawn.
    metric : str
        The metric's name, for the metric panel's label.
    style : dict
        Panel size and palette; see `new_figure`.
    dataset : str
        Named in the suptitle.

    Returns
    -------
    figure : Figure
        One panel per planned quantity (both CVs together), log-scaled n.
    """
    points = select(fold_cv, selected)
    panels = [["raw_cv", "debiased_cv"]]
    if "test_metric" in set(planning["quantity"]):
        panels.append(["test_metric"])
    figure, axes = new_figure(style, columns=len(panels))
    colours = sns.color_palette(style["palette"], 3)
    for axis, quantities in zip(axes.flat, panels, strict=True):
        for colour, quantity in zip(colours, quantities, strict=False):
            row = planning[planning["quantity"] == quantity].iloc[0]
            if not len(row["grid"]):  # not planned: too few sample sizes
                continue
            label = quantity.replace("_", " ")
            axis.scatter(points["n"], points[PLANNED_COLUMN[quantity]], color=colour, s=12)
            axis.plot(row["grid"], row["fit"], color=colour, label=f"{label}: {row['status']}")
            axis.fill_between(
                row["grid"], row["band_low"], row["band_high"], color=colour, alpha=0.2
            )
            if np.isfinite(row["n_star"]) and row["n_star"] <= row["grid"][-1]:
                axis.axvline(row["n_star"], color=colour, linestyle=":")
        axis.axhline(row["target"], color="grey", linestyle="--", label=f"target {row['target']:g}")
        axis.set_xscale("log")
        axis.set_xlabel("sample size n")
        axis.set_ylabel("CV (%)" if quantities[0] != "test_metric" else metric_label(metric))
        axis.legend(fontsize="x-small")
    figure.suptitle(f"{dataset}: how much data until the target is met")
    figure.tight_layout()
    return figure


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
