"""A multi-label dataset's view manifest: one label's target, or the macro view's."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hetcv.io import write_parquet
from hetcv.label_names import MACRO


def view_manifest(manifest: pd.DataFrame, key: str) -> pd.DataFrame:
    """A view's manifest: the parent's, its ``target`` the label's (the macro view: the count
    of positive labels), and the other label columns dropped."""
    labels = [c for c in manifest.columns if c.startswith("target_")]
    target = (
        manifest[labels].sum(axis=1).astype(np.float64)
        if key == MACRO
        else manifest[f"target_{key}"].astype(np.int64)
    )
    return manifest.drop(columns=[*labels, "target"]).assign(target=target.to_numpy())


def run_label_manifest_job(inputs: dict, outputs: dict, params: dict) -> None:
    """The label_manifest rule: a view's manifest from its multi-label dataset's.

    Parameters
    ----------
    inputs : dict
        ``manifest``: the multi-label dataset's.
    outputs : dict
        ``manifest``: the view's.
    params : dict
        ``label``: the view's label key, or ``macro``.
    """

    manifest = pd.read_parquet(inputs["manifest"])
    write_parquet(view_manifest(manifest, params["label"]), outputs["manifest"])
