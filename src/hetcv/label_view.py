"""One label's view of a multi-label dataset's held-out table, or the macro view."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hetcv.columns import feature_columns
from hetcv.errors import HetcvError
from hetcv.io import write_parquet
from hetcv.label_names import MACRO, label_columns


def label_view(held_out: pd.DataFrame, key: str, where: str) -> pd.DataFrame:
    """One label's view of a multi-label held-out table: a binary classification table.

    Parameters
    ----------
    held_out : DataFrame
        One (n, fold)'s multi-label rows: ``sample_id, n, fold``, ``target_<key>``,
        ``probability_<key>`` and the embedding.
    key : str
        The label.
    where : str
        What errors name (dataset, n and fold).

    Returns
    -------
    DataFrame
        ``sample_id, n, fold, target, prediction, predicted_label, correct, loss,
        probability_0, probability_1`` and the embedding, as training a binary model writes.

    Raises
    ------
    HetcvError
        When the fold's held-out samples hold one class of the label only (its AUROC, and
        what its clusters' errors mean, are then undefined).
    """
    target = held_out[f"target_{key}"].to_numpy(np.int64)
    if len(np.unique(target)) < 2:
        raise HetcvError(
            f"{where}: label {key!r} has one class only ({int(target[0])}) among the held-out "
            "samples; use fewer folds or larger sample sizes"
        )
    probability = np.clip(held_out[f"probability_{key}"].to_numpy(np.float64), 0.0, 1.0)
    predicted = (probability >= 0.5).astype(np.int64)
    picked = np.where(target == 1, probability, 1 - probability)
    table = pd.DataFrame(
        {
            "sample_id": held_out["sample_id"].to_numpy(),
            "n": held_out["n"].to_numpy(),
            "fold": held_out["fold"].to_numpy(),
            "target": target,
            "prediction": probability,
            "predicted_label": predicted,
            "correct": predicted == target,
            "loss": -np.log(np.clip(picked, 1e-12, None)),
            "probability_0": 1 - probability,
            "probability_1": probability,
        }
    )
    return pd.concat([table, held_out[feature_columns(held_out.columns)]], axis=1)


def macro_view(held_out: pd.DataFrame) -> pd.DataFrame:
    """The macro view: each sample's share of labels predicted right at 0.5 (a score task).

    Parameters
    ----------
    held_out : DataFrame
        One (n, fold)'s multi-label rows with ``correct_<key>`` for every label.

    Returns
    -------
    DataFrame
        ``sample_id, n, fold, target`` (the share), ``prediction`` (NaN), ``score`` (the
        share), ``loss`` (1 − share) and the embedding.
    """
    keys = label_columns(held_out)
    share = np.mean([held_out[f"correct_{key}"].to_numpy(np.float64) for key in keys], axis=0)
    table = pd.DataFrame(
        {
            "sample_id": held_out["sample_id"].to_numpy(),
            "n": held_out["n"].to_numpy(),
            "fold": held_out["fold"].to_numpy(),
            "target": share,
            "prediction": np.nan,
            "score": share,
            "loss": 1.0 - share,
        }
    )
    return pd.concat([table, held_out[feature_columns(held_out.columns)]], axis=1)


def run_label_view_job(inputs: dict, outputs: dict, params: dict) -> None:
    """The label_view rule: one (n, fold)'s held-out table of one view.

    Parameters
    ----------
    inputs : dict
        ``features``: the multi-label dataset's held-out table of this (n, fold).
    outputs : dict
        ``features``: the view's.
    params : dict
        ``dataset`` (the view), ``label`` (its key, or ``macro``), ``n`` and ``fold``.
    """

    held_out = pd.read_parquet(inputs["features"])
    where = f"datasets.{params['dataset']} (n = {params['n']}, fold {params['fold']})"
    key = params["label"]
    view = macro_view(held_out) if key == MACRO else label_view(held_out, key, where)
    write_parquet(view, outputs["features"])
