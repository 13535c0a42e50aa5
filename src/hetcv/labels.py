"""The labels of a multi-label dataset side by side, Holm-adjusted over labels and sizes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hetcv.io import write_parquet
from hetcv.label_names import MACRO
from hetcv.stats import SIGNIFICANCE, holm


def labels_summary(cv: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The labels side by side: each view's selected CV rows, Holm over labels and sizes.

    Parameters
    ----------
    cv : dict of str to DataFrame
        Label key (and :data:`MACRO`) → that view's ``cv.parquet``.

    Returns
    -------
    DataFrame
        One row per (label, n) of the selected clustering: ``label, n, test_metric, cv,
        debiased_cv`` with its CI, ``p_value, p_calibrated``, their Holm adjustment over
        every label and size (``p_holm_labels``, ``p_holm_calibrated_labels``; the macro
        view is not in that family, being made of the labels), and ``beyond_noise``
        (``p_holm_labels`` < 0.05).
    """
    columns = ["n", "test_metric", "cv", "debiased_cv", "debiased_cv_ci_low"]
    columns += ["debiased_cv_ci_high", "p_value", "p_calibrated"]
    rows = []
    for key, table in cv.items():
        chosen = table[table["role"] == "selected"]
        present = [c for c in columns if c in chosen]
        rows.append(chosen[present].assign(label=key))
    summary = pd.concat(rows, ignore_index=True)
    labels = summary["label"] != MACRO
    for source, target in (
        ("p_value", "p_holm_labels"),
        ("p_calibrated", "p_holm_calibrated_labels"),
    ):
        summary[target] = np.nan
        if source in summary:
            summary.loc[labels, target] = holm(summary.loc[labels, source].to_numpy(np.float64))
    summary["beyond_noise"] = summary["p_holm_labels"] < SIGNIFICANCE
    leading = ["label", "n"]
    return summary[leading + [c for c in summary.columns if c not in leading]]


def run_labels_job(inputs: dict, outputs: dict, params: dict) -> None:
    """The labels rule: every view's ``cv.parquet`` of one multi-label dataset, side by side.

    Parameters
    ----------
    inputs : dict
        ``cv``: the views' ``cv.parquet``, in the order of ``params["labels"]``.
    outputs : dict
        ``labels`` (``summary/labels.parquet``).
    params : dict
        ``labels``: the views' label keys (and ``macro``).
    """

    tables = {
        key: pd.read_parquet(path) for key, path in zip(params["labels"], inputs["cv"], strict=True)
    }
    write_parquet(labels_summary(tables), outputs["labels"])
