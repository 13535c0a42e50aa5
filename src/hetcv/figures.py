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

from hetcv.figure_style import as_plotted, metric_label, new_figure, sample_size_axis, save_figures
from hetcv.io import read_tables
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

    The Pearson r and permutation p of every correlation level are printed below the axes,
    where they hide no point.

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
    # A strip below the plot holds the correlations and the legend (inside the axes they
    # covered points).
    axis.set_position([0.12, 0.40, 0.84, 0.52])
    caption = figure.add_axes([0.12, 0.0, 0.84, 0.22])
    caption.axis("off")
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
    caption.text(0.0, 0.0, "\n".join(lines), fontsize="small", va="bottom")
    axis.set_xlabel("coefficient of variation of cluster metrics (%)")
    axis.set_ylabel(metric_label(metric))
    axis.set_title(f"{dataset}: {metric_label(metric)} against heterogeneity (CV)")
    handles, labels = axis.get_legend_handles_labels()
    caption.legend(handles, labels, fontsize="small", loc="upper left", ncol=2, frameon=False)
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
        ``planning.parquet`` (:func:`hetcv.plan.planning_table`), with its curve lists.
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


def run_figures_job(inputs: dict, outputs: dict, params: dict) -> None:
    """The figures rule: Figures 2–5 and the cluster-number exploration (``validity``).

    Parameters
    ----------
    inputs : dict
        The summary tables ``cv``, ``cluster_stats``, ``fold_cv``, ``correlation``,
        ``validity``, ``metadata`` and ``planning``.
    outputs : dict
        ``{fig2,fig3,fig4,fig5,validity,metadata,planning}_{png,pdf}``.
    params : dict
        ``dataset``, ``task``, ``metric``, ``selected`` and ``style`` (the ``report`` config).
    """
    names = ("cv", "cluster_stats", "fold_cv", "correlation", "validity", "metadata", "planning")
    summary = read_tables(inputs, names)
    dataset, metric, selected, style = (
        params[k] for k in ("dataset", "metric", "selected", "style")
    )
    clusters, cv = summary["cluster_stats"], summary["cv"]
    made = {
        "fig2": figure2(clusters, cv, selected, metric, style, dataset),
        "fig3": figure3(clusters, selected, style, dataset),
        "fig4": figure4(cv, selected, style, dataset),
        "fig5": figure5(
            cv, summary["fold_cv"], summary["correlation"], selected, metric, style, dataset
        ),
        "validity": figure_validity(summary["validity"], style, dataset),
        "metadata": figure_metadata(summary["metadata"], style, dataset),
        "planning": figure_planning(
            summary["planning"], summary["fold_cv"], selected, metric, style, dataset
        ),
    }
    save_figures(made, outputs, params["style"])
