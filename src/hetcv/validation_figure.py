"""The planted-subgroup benchmark's figure (the validation_figure rule)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from scipy import stats

from hetcv.columns import NULL_SETTING
from hetcv.figure_style import new_figure, save


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


def run_validation_figure_job(inputs: dict, outputs: dict, params: dict) -> None:
    """The validation_figure rule: the planted-subgroup benchmark's figure.

    Parameters
    ----------
    inputs : dict
        ``table`` (``results/validation/table.csv``).
    outputs : dict
        ``png`` and ``pdf``.
    params : dict
        ``style``.
    """
    figure = figure_validation(pd.read_csv(inputs["table"]), params["style"])
    save(figure, outputs["png"], outputs["pdf"], params["style"])
