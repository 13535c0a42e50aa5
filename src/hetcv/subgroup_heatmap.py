"""The heat map of subgroup share per cluster (the subgroup_heatmap rule)."""

from __future__ import annotations

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from hetcv.figure_style import new_figure, save_figures
from hetcv.io import read_per_sample
from hetcv.subgroup_variants import subgroup_shares


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


def run_subgroup_heatmap_job(inputs: dict, outputs: dict, params: dict) -> None:
    """The subgroup_heatmap rule: each subgroup's share of each consensus cluster, per n.

    Parameters
    ----------
    inputs : dict
        ``export`` (``clusters_per_sample.csv``) and ``manifest`` (with ``subgroup``).
    outputs : dict
        ``subgroups_png`` and ``subgroups_pdf``.
    params : dict
        ``dataset``, ``style`` (and the reporting keys it ignores).
    """
    subgroup = pd.read_parquet(inputs["manifest"]).set_index("sample_id")["subgroup"]
    shares = subgroup_shares(read_per_sample(inputs["clusters_per_sample"]), subgroup)
    made = {"subgroups": figure_subgroups(shares, params["style"], params["dataset"])}
    save_figures(made, outputs, params["style"])
