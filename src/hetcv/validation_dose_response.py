"""The heterogeneity index on the benchmark's ladder: one dose–response figure.

Does the paper's index rise with the strength of a real failure and stay quiet at the null?
Per mechanism, the debiased CV of each seed at each rung (null first) and the share of seeds
whose confidence-calibrated test rejects at 5 %. The null rungs of shift, rare and noisy are
the clean datasets (``nothing planted``); the marker's is ρ = 0.5.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from hetcv.figure_style import new_figure, save

CLEAN = "none"


def ladder_points(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (mechanism, dataset): its rung's strength and the index's columns.

    Parameters
    ----------
    table : DataFrame
        :func:`hetcv.validation.scored_table` with ``mechanism, strength, null`` and the
        ``index_*`` columns.

    Returns
    -------
    DataFrame
        ``mechanism, setting, strength, dataset, index_debiased_cv, index_p_calibrated``;
        the clean datasets repeated as the null rung of every mechanism without its own.
    """
    per_dataset = table.drop_duplicates("dataset")
    columns = ["mechanism", "setting", "strength", "dataset", "null"]
    columns += [c for c in per_dataset.columns if c.startswith("index_")]
    per_dataset = per_dataset[columns]
    clean = per_dataset[per_dataset["mechanism"] == CLEAN]
    parts = []
    for mechanism in dict.fromkeys(per_dataset["mechanism"]):
        if mechanism == CLEAN:
            continue
        own = per_dataset[per_dataset["mechanism"] == mechanism]
        if not own["null"].any():
            own = pd.concat([clean.assign(mechanism=mechanism), own], ignore_index=True)
        parts.append(own)
    return pd.concat(parts, ignore_index=True) if parts else per_dataset.iloc[:0]


def figure_dose_response(table: pd.DataFrame, style: dict) -> Figure:
    """Left: the debiased CV per seed against the rung; right: the calibrated test's rate.

    Parameters
    ----------
    table : DataFrame
        As for :func:`ladder_points`.
    style : dict
        Report style.

    Returns
    -------
    Figure
    """
    points = ladder_points(table)
    figure, axes = new_figure(style, columns=2)
    cv_axis, rate_axis = axes[0]
    mechanisms = list(dict.fromkeys(points["mechanism"]))
    colours = dict(
        zip(mechanisms, sns.color_palette(style["palette"], max(1, len(mechanisms))), strict=False)
    )
    rungs = ["null", "planted"]
    width = 0.8 / max(1, len(mechanisms))
    for offset, mechanism in enumerate(mechanisms):
        rows = points[points["mechanism"] == mechanism]
        shift = (offset - (len(mechanisms) - 1) / 2) * width
        # Each rung's position: 0 for the null, then the planted rungs by strength.
        strengths = sorted(rows.loc[~rows["null"], "strength"].unique())
        position = rows["strength"].map({0.0: 0, **{v: i + 1 for i, v in enumerate(strengths)}})
        position = np.where(rows["null"], 0, position)
        cv_axis.scatter(
            position + shift,
            rows["index_debiased_cv"],
            color=colours[mechanism],
            label=mechanism,
            s=14,
        )
        rate = rows.groupby(position)["index_p_calibrated"].apply(lambda p: (p < 0.05).mean())
        rate_axis.bar(rate.index + shift, rate.to_numpy(), width, color=colours[mechanism])
        rungs = ["null"] + [f"rung {i + 1}" for i in range(max(len(strengths), 1))]
    for axis in (cv_axis, rate_axis):
        axis.set_xticks(range(len(rungs)), rungs)
        axis.set_xlabel("strength of the planted failure")
    cv_axis.set_ylabel("debiased CV of accuracy (%)")
    cv_axis.set_title("The index per seed")
    cv_axis.legend(fontsize="x-small", loc="upper left")
    rate_axis.axhline(0.05, color="grey", linestyle="--", linewidth=0.8)
    rate_axis.set_ylim(0, 1.05)
    rate_axis.set_ylabel("share of seeds, calibrated p < 0.05")
    rate_axis.set_title("Calibrated heterogeneity test")
    figure.tight_layout()
    return figure


def run_validation_dose_response_job(inputs: dict, outputs: dict, params: dict) -> None:
    """The validation_dose_response rule: ``table`` → ``png`` and ``pdf``."""
    figure = figure_dose_response(pd.read_csv(inputs["table"]), params["style"])
    save(figure, outputs["png"], outputs["pdf"], params["style"])
