"""One (n, fold)'s held-out rows of an imported features table, as training would write them."""

from __future__ import annotations

import pandas as pd

from hetcv.io import write_parquet


def run_fold_features_job(inputs: dict, outputs: dict, params: dict) -> None:
    """The fold_features rule: one (n, fold)'s held-out rows, as training would write them.

    Parameters
    ----------
    inputs : dict
        ``held_out`` (every row of the table, checked).
    outputs : dict
        ``features``.
    params : dict
        ``n`` and ``fold``.
    """

    held_out = pd.read_parquet(inputs["held_out"])
    at = (held_out["n"] == params["n"]) & (held_out["fold"] == params["fold"])
    write_parquet(held_out[at].reset_index(drop=True), outputs["features"])
