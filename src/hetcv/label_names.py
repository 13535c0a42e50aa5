"""Multi-label findings (``task: multilabel``): one model, one analysis per label.

A multi-label dataset (chest X-rays with 14 findings, say) trains one network with one
sigmoid output per label (or brings its own model's table). Its held-out table holds, per
label ``L``, ``target_L`` (0/1), ``probability_L`` and ``correct_L`` (at 0.5). The analysis
then runs on **views** of that table, each an ordinary dataset of the workflow:

- ``<dataset>@<label>``: the binary task of one label (target, its probability, correct at
  0.5, its cross-entropy), so every statistic, slice, figure and table is that label's, with
  the study's ``metric.classification`` (accuracy at 0.5 or AUROC);
- ``<dataset>@macro``: each sample's share of labels predicted right at 0.5, a ``score``
  task; its per-cluster mean is the macro mean of the labels' accuracies.

Every view of a dataset is clustered with the parent's seeds, so that all labels are read on
the same clusters. :func:`hetcv.labels.labels_summary` then puts the labels side by
side with Holm's adjustment over every label and sample size.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from hetcv.errors import HetcvError

MACRO = "macro"
SEPARATOR = "@"


def label_key(label: str) -> str:
    """A label's name as a column suffix and a path part: anything but ``[A-Za-z0-9_.-]`` → ``_``.

    Parameters
    ----------
    label : str
        The label column's name in the source (``Pleural Effusion``).

    Returns
    -------
    str
        ``Pleural_Effusion``.
    """
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(label)).strip("_") or "label"


def view_name(dataset: str, key: str) -> str:
    """The view dataset of one label (or :data:`MACRO`): ``chest@Pleural_Effusion``."""
    return f"{dataset}{SEPARATOR}{key}"


def label_keys(labels: list[str], where: str) -> list[str]:
    """The keys of a dataset's labels, checked to be distinct and not :data:`MACRO`.

    Parameters
    ----------
    labels : list of str
        ``target_columns``.
    where : str
        The config key, for errors.

    Returns
    -------
    list of str

    Raises
    ------
    HetcvError
        When two labels share a key or one is named ``macro``.
    """
    keys = [label_key(label) for label in labels]
    for key, label in zip(keys, labels, strict=True):
        if keys.count(key) > 1:
            raise HetcvError(f"{where}: labels {labels} give the name {key!r} twice")
        if key == MACRO:
            raise HetcvError(f"{where}: a label may not be called {label!r} (the macro view's)")
    return keys


def validate_labels(manifest: pd.DataFrame, labels: list[str], where: str) -> pd.DataFrame:
    """Each label column as ``target_<key>`` (0/1), and ``target`` the samples' label set.

    Parameters
    ----------
    manifest : DataFrame
        ``sample_id`` and the label columns, as the source names them.
    labels : list of str
        ``target_columns``.
    where : str
        The source, for errors.

    Returns
    -------
    DataFrame
        The label columns replaced by ``target_<key>`` int64 columns, and ``target`` the
        comma-joined 0/1 pattern (which splits stratify on).

    Raises
    ------
    HetcvError
        Naming the row, sample and column, for a value that is not 0 or 1 (booleans and
        ``"0"``/``"1"`` are accepted), and naming the label when it has one class only.
    """
    manifest = manifest.copy()
    codes = []
    for label, key in zip(labels, label_keys(labels, where), strict=True):
        raw = manifest.pop(label)
        values = pd.to_numeric(raw.replace({True: 1, False: 0}), errors="coerce")
        bad = ~values.isin([0, 1]).to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise HetcvError(
                f"{where}: row {row} (sample {manifest['sample_id'].iloc[row]!r}): label column "
                f"{label!r} is {raw.tolist()[row]!r}, not 0 or 1"
            )
        values = values.astype(np.int64)
        if values.nunique() < 2:
            raise HetcvError(f"{where}: label {label!r} has one class only ({int(values.iloc[0])})")
        manifest[f"target_{key}"] = values.to_numpy()
        codes.append(values.astype(str).to_numpy())
    manifest["target"] = [",".join(pattern) for pattern in zip(*codes, strict=True)]
    return manifest


def label_columns(table: pd.DataFrame) -> list[str]:
    """The label keys of a multi-label table, in its column order (``target_<key>``)."""
    return [c.removeprefix("target_") for c in table.columns if c.startswith("target_")]
