"""A team's own model: its held-out predictions and embeddings, instead of training here.

The ``features`` source (``source: {kind: features, table: PATH, embedding: PREFIX}``) is a
Parquet or CSV table with one row per held-out prediction:

- ``sample_id`` and ``target`` (a class, or a value for regression);
- the prediction: ``prediction`` (the positive class's probability for a binary task, the
  predicted value for regression) or, for any classification, ``probability_0`` …
  ``probability_{C-1}`` (one per class, in sorted class order, summing to 1);
- for ``task: score`` (segmentation Dice, IoU …): the per-sample ``score`` column (named by
  ``source.score_column``) within ``source.score_range``, no target or prediction needed,
  or the per-case metric of an nnU-Net ``summary.json`` (``source.nnunet_summary``:
  :func:`nnunet_case_scores`), joined to the table by ``sample_id``;
- optional ``loss`` (else cross-entropy of the true class, or the squared error);
- optional ``n`` and ``fold``: which model produced the row (trained on the size-``n`` sample
  without that fold). Without them the study has one size (the table's rows) and one fold;
- the embedding: the columns whose names start with ``embedding`` (``emb_0``, ``emb_1`` …,
  in table order), or one column named ``embedding`` holding a list per row; any width of at
  least ``clustering.pca_components``;
- optional metadata columns (``metadata_columns``), carried into the manifest.

:func:`held_out_features` turns it into what training would have written: the manifest and,
per row, the columns of ``features.parquet`` with the embedding renamed ``f000`` ….
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet

from hetcv.columns import feature_names
from hetcv.errors import HetcvError
from hetcv.io import write_parquet
from hetcv.label_names import label_keys, validate_labels
from hetcv.prepare import validate_manifest

PROBABILITY_TOLERANCE = 1e-3


def read_features_table(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """The table of a ``features`` source (Parquet, or CSV by its ``.csv`` suffix).

    Parameters
    ----------
    path : str or Path
        ``source.table``.
    columns : list of str, optional
        Read only these (Parquet reads nothing else; CSV parses and drops the rest).

    Returns
    -------
    DataFrame

    Raises
    ------
    HetcvError
        When the file is missing, unreadable or lacks one of ``columns``.
    """
    path = Path(path)
    if not path.is_file():
        raise HetcvError(f"source.table: {path} does not exist")
    try:
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path, usecols=columns)
        return pd.read_parquet(path, columns=columns)
    except (OSError, ValueError, KeyError) as error:
        raise HetcvError(f"source.table: cannot read {path}: {error}") from error


def table_columns(path: str | Path) -> list[str]:
    """A features table's column names, from its header (CSV) or schema (Parquet) only.

    Parameters
    ----------
    path : str or Path
        ``source.table``.

    Returns
    -------
    list of str

    Raises
    ------
    HetcvError
        When the file is missing or unreadable.
    """

    path = Path(path)
    if not path.is_file():
        raise HetcvError(f"source.table: {path} does not exist")
    try:
        if path.suffix.lower() == ".csv":
            return list(pd.read_csv(path, nrows=0).columns)
        return list(pyarrow.parquet.read_schema(path).names)
    except (OSError, ValueError) as error:
        raise HetcvError(f"source.table: cannot read {path}: {error}") from error


def layout(table: pd.DataFrame, where: str) -> dict[int, dict[int, int]]:
    """Which models produced the rows: rows per (n, fold), from the ``n`` and ``fold`` columns.

    Parameters
    ----------
    table : DataFrame
        At least ``sample_id``, and ``n`` and ``fold`` when given.
    where : str
        The table's path, for errors.

    Returns
    -------
    dict
        ``{n: {fold: rows}}``; ``{rows: {0: rows}}`` when the table has neither column.

    Raises
    ------
    HetcvError
        For only one of ``n`` and ``fold``, non-integer values, or sample sizes whose fold
        numbers differ.
    """
    given = [column for column in ("n", "fold") if column in table]
    if not given:
        return {len(table): {0: len(table)}}
    if len(given) == 1:
        raise HetcvError(f"{where}: has column {given[0]!r} but not its partner (n and fold)")
    for column in ("n", "fold"):
        values = pd.to_numeric(table[column], errors="coerce")
        if values.isna().any() or (values % 1 != 0).any() or (values < 0).any():
            raise HetcvError(f"{where}: column {column!r} must hold whole numbers ≥ 0")
    counts = table.groupby(["n", "fold"]).size()
    folds = {int(n): {int(f): int(c) for (_, f), c in at.items()} for n, at in counts.groupby("n")}
    fold_sets = {n: sorted(per_fold) for n, per_fold in folds.items()}
    if len({tuple(numbers) for numbers in fold_sets.values()}) > 1:
        raise HetcvError(f"{where}: every n must have the same folds, found {fold_sets}")
    return folds


def embedding_matrix(table: pd.DataFrame, embedding: str, where: str) -> np.ndarray:
    """The embedding as a float32 matrix, from prefixed columns or one list column.

    Parameters
    ----------
    table : DataFrame
        The features table.
    embedding : str
        A column prefix (``emb_``), or the name of one column holding a list per row.
    where : str
        The table's path, for errors.

    Returns
    -------
    ndarray of shape (n_rows, width), float32

    Raises
    ------
    HetcvError
        For no such columns, ragged lists, or a non-numeric or non-finite value.
    """
    if embedding in table and table[embedding].map(np.ndim).eq(1).all():
        widths = table[embedding].map(len)
        if widths.nunique() != 1:
            row = int(np.flatnonzero(widths != widths.iloc[0])[0])
            raise HetcvError(
                f"{where}: row {row}: embedding has {widths.iloc[row]} values, "
                f"row 0 has {widths.iloc[0]}"
            )
        raw = pd.DataFrame(table[embedding].tolist(), index=table.index)
    else:
        columns = [column for column in table.columns if str(column).startswith(embedding)]
        if not columns:
            raise HetcvError(f"{where}: no embedding column starts with {embedding!r}")
        raw = table[columns]
    values = raw.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        row, column = (int(index[0]) for index in np.nonzero(bad))
        raise HetcvError(
            f"{where}: row {row} (sample {table['sample_id'].iloc[row]!r}): embedding value "
            f"{column} is {str(raw.iloc[row, column])!r}, not a finite number"
        )
    return values.astype(np.float32)


def class_probabilities(table: pd.DataFrame, n_classes: int, where: str) -> np.ndarray:
    """Each row's probability of every class.

    Parameters
    ----------
    table : DataFrame
        The features table: ``probability_0`` … ``probability_{C-1}``, or, for two classes,
        ``prediction`` (the positive class's probability).
    n_classes : int
        The number of classes (C).
    where : str
        The table's path, for errors.

    Returns
    -------
    ndarray of shape (n_rows, n_classes)

    Raises
    ------
    HetcvError
        For missing columns, values outside [0, 1], or rows not summing to 1.
    """
    columns = [f"probability_{index}" for index in range(n_classes)]
    if all(column in table for column in columns):
        probability = table[columns].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    elif n_classes == 2 and "prediction" in table:
        positive = pd.to_numeric(table["prediction"], errors="coerce").to_numpy(np.float64)
        probability = np.column_stack([1.0 - positive, positive])
    else:
        wanted = "prediction" if n_classes == 2 else ", ".join(columns)
        raise HetcvError(f"{where}: column(s) {wanted} not found ({n_classes} classes)")
    bad = ~((probability >= 0) & (probability <= 1))
    if bad.any():
        row = int(np.nonzero(bad)[0][0])
        raise HetcvError(f"{where}: row {row}: a class probability is not in [0, 1]")
    off = np.abs(probability.sum(axis=1) - 1) > PROBABILITY_TOLERANCE
    if off.any():
        row = int(np.flatnonzero(off)[0])
        raise HetcvError(f"{where}: row {row}: the class probabilities do not sum to 1")
    return probability


def held_out_features(
    table: pd.DataFrame,
    *,
    task: str,
    embedding: str,
    metadata_columns: list[str],
    pca_components: int,
    where: str,
    score: dict | None = None,
    labels: list[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The manifest and the held-out rows (as ``features.parquet`` holds them) of a table.

    Parameters
    ----------
    table : DataFrame
        The features table (see the module doc).
    task : {"classification", "regression", "score"}
    embedding : str
        ``source.embedding``: column prefix or list column.
    metadata_columns : list of str
        Columns carried into the manifest.
    pca_components : int
        ``clustering.pca_components``: the embedding must be at least this wide.
    where : str
        The table's path, for errors.
    score : dict or None, default=None
        ``task: score`` only: ``column``, ``range`` ([low, high]) and ``higher_is_better``.
    labels : list of str or None, default=None
        ``task: multilabel`` only: the 0/1 label columns, each with a ``probability_<label>``
        column of the model's probability.

    Returns
    -------
    manifest : DataFrame
        One row per sample: ``sample_id``, ``target`` (and ``label`` for text classes), the
        metadata columns.
    held_out : DataFrame
        One row per table row: ``sample_id, n, fold, target, prediction``, then
        ``predicted_label, correct`` and ``probability_*`` (classification), ``sq_error``
        (regression) or ``score`` (score: the table's score, mirrored within its range when
        lower is better, so that higher is always better; ``target`` keeps the table's),
        ``loss``, and the embedding as ``f000`` ….

    Raises
    ------
    HetcvError
        One line for each kind of bad table: a missing column, a duplicate sample within one
        n, a bad target, prediction or embedding, or an embedding narrower than
        ``pca_components``.
    """
    if task == "score":
        table = _with_score_target(table, score, where)
    targets = list(labels) if task == "multilabel" else ["target"]
    for column in ("sample_id", *targets, *metadata_columns):
        if column not in table:
            raise HetcvError(
                f"{where}: column {column!r} not found (columns: "
                f"{', '.join(map(str, table.columns[:20]))}{' …' if table.shape[1] > 20 else ''})"
            )
    table = table.reset_index(drop=True)
    per_model = layout(table, where)
    if "n" not in table:
        table = table.assign(n=next(iter(per_model)), fold=0)
    repeated = table.duplicated(["n", "sample_id"])
    if repeated.any():
        row = int(np.flatnonzero(repeated)[0])
        raise HetcvError(
            f"{where}: row {row}: sample {table['sample_id'].iloc[row]!r} appears twice at "
            f"n = {table['n'].iloc[row]}"
        )
    vectors = embedding_matrix(table, embedding, where)
    if vectors.shape[1] < pca_components:
        raise HetcvError(
            f"{where}: the embedding has {vectors.shape[1]} dimensions, fewer than "
            f"clustering.pca_components = {pca_components}"
        )
    samples = table.drop_duplicates("sample_id")[["sample_id", *targets, *metadata_columns]]
    samples = samples.astype({"sample_id": str})
    if task == "multilabel":
        samples = validate_labels(samples, targets, where)
    checked_as = {"score": "regression", "multilabel": "classification"}.get(task, task)
    manifest = validate_manifest(samples, checked_as, where)
    coded = manifest.set_index("sample_id")["target"]
    rows = pd.DataFrame(
        {
            "sample_id": table["sample_id"].astype(str),
            "n": table["n"].astype(np.int64),
            "fold": table["fold"].astype(np.int64),
            "target": coded.loc[table["sample_id"].astype(str)].to_numpy(),
        }
    )
    if task == "classification":
        rows = _classified(rows, table, np.unique(manifest["target"]), where)
    elif task == "multilabel":
        rows = _multilabelled(rows, table, manifest, targets, where)
    elif task == "score":
        rows = _scored(rows, score)
    else:
        rows = _regressed(rows, table, where)
    if "loss" in table:
        rows["loss"] = pd.to_numeric(table["loss"], errors="coerce").to_numpy(np.float64)
        if not np.isfinite(rows["loss"]).all():
            raise HetcvError(f"{where}: column 'loss' has a missing or non-numeric value")
    embedded = pd.DataFrame(vectors, columns=feature_names(vectors.shape[1]))
    return manifest, pd.concat([rows, embedded], axis=1)


def _classified(
    rows: pd.DataFrame, table: pd.DataFrame, classes: np.ndarray, where: str
) -> pd.DataFrame:
    probability = class_probabilities(table, len(classes), where)
    true_class = np.searchsorted(classes, rows["target"].to_numpy())
    predicted = classes[probability.argmax(axis=1)]
    picked = probability[np.arange(len(rows)), true_class]
    columns = {
        "prediction": probability[:, 1] if len(classes) == 2 else probability.max(axis=1),
        "predicted_label": predicted,
        "correct": predicted == rows["target"].to_numpy(),
        "loss": -np.log(np.clip(picked, 1e-12, None)),
        **{f"probability_{index}": probability[:, index] for index in range(len(classes))},
    }
    return rows.assign(**columns)


def _multilabelled(
    rows: pd.DataFrame, table: pd.DataFrame, manifest: pd.DataFrame, labels: list, where: str
) -> pd.DataFrame:
    """Multi-label rows as training writes them: per label its target, probability, correct."""
    keys = label_keys(labels, "source.target_columns")
    known = manifest.set_index("sample_id")
    ids = rows["sample_id"].to_numpy()
    columns, probabilities, truths = {}, [], []
    for label, key in zip(labels, keys, strict=True):
        name = f"probability_{label}"
        if name not in table:
            raise HetcvError(f"{where}: column {name!r} (the model's probability) not found")
        probability = pd.to_numeric(table[name], errors="coerce").to_numpy(np.float64)
        bad = ~((probability >= 0) & (probability <= 1))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise HetcvError(f"{where}: row {row}: {name} is not a probability in [0, 1]")
        truth = known.loc[ids, f"target_{key}"].to_numpy(np.int64)
        columns |= {
            f"target_{key}": truth,
            f"probability_{key}": probability,
            f"correct_{key}": (probability >= 0.5) == (truth == 1),
        }
        probabilities.append(probability), truths.append(truth)
    probability, truth = np.column_stack(probabilities), np.column_stack(truths)
    picked = np.where(truth == 1, probability, 1 - probability)
    loss = -np.log(np.clip(picked, 1e-12, None)).mean(axis=1)
    return rows.assign(prediction=probability.mean(axis=1), loss=loss, **columns)


def _with_score_target(table: pd.DataFrame, score: dict, where: str) -> pd.DataFrame:
    """The table with its score checked (numeric, within the range) and copied to ``target``."""
    column = score["column"]
    if column not in table:
        raise HetcvError(f"{where}: score column {column!r} not found (source.score_column)")
    if "target" in table and column != "target":
        raise HetcvError(
            f"{where}: a score task takes its outcome from {column!r}; remove the 'target' column"
        )
    values = pd.to_numeric(table[column], errors="coerce").to_numpy(np.float64)
    low, high = score["range"]
    bad = ~np.isfinite(values) | (values < low) | (values > high)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise HetcvError(
            f"{where}: row {row}: score {table[column].tolist()[row]!r} is not a number within "
            f"source.score_range [{low:g}, {high:g}]"
        )
    return table.assign(target=values)


def _scored(rows: pd.DataFrame, score: dict) -> pd.DataFrame:
    """Score rows: the analysed score (higher is better) and its loss, 0 (best) to 1 (worst)."""
    low, high = score["range"]
    raw = rows["target"].to_numpy(np.float64)
    analysed = raw if score["higher_is_better"] else low + high - raw
    return rows.assign(prediction=np.nan, score=analysed, loss=(high - analysed) / (high - low))


def nnunet_case_scores(path: str | Path, label: str, metric: str) -> pd.DataFrame:
    """One label's per-case metric from an nnU-Net ``summary.json`` (``metric_per_case``).

    nnU-Net v2's evaluation writes, per case, its ``reference_file`` and ``prediction_file``
    and ``metrics`` per label (``{"1": {"Dice": …, "IoU": …}, …}``). A case's id is its
    reference file's name without the image extension (``.nii.gz``, ``.nii``, ``.png``,
    ``.tif``, ``.mha``, ``.nrrd``).

    Parameters
    ----------
    path : str or Path
        The ``summary.json``.
    label : str
        The label (region) whose metric is read, e.g. ``"1"``.
    metric : str
        The metric's key, e.g. ``"Dice"``.

    Returns
    -------
    DataFrame
        ``sample_id`` (the case id) and ``score``, one row per case.

    Raises
    ------
    HetcvError
        Naming the file and the case, for a file that is not such a summary, a label or
        metric a case lacks, or a case id that appears twice.
    """

    try:
        cases = json.loads(Path(path).read_text())["metric_per_case"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise HetcvError(
            f"{path}: not an nnU-Net summary.json with metric_per_case ({error})"
        ) from None
    rows = []
    for index, case in enumerate(cases):
        reference = str(case.get("reference_file", case.get("prediction_file", "")))
        name = Path(reference).name
        for extension in (".nii.gz", ".nii", ".png", ".tif", ".tiff", ".mha", ".nrrd"):
            if name.endswith(extension):
                name = name[: -len(extension)]
                break
        try:
            value = case["metrics"][label][metric]
        except (KeyError, TypeError):
            raise HetcvError(
                f"{path}: case {index} ({name or '?'}) has no metrics[{label!r}][{metric!r}] "
                "(source.nnunet_label, source.nnunet_metric)"
            ) from None
        rows.append({"sample_id": name, "score": value})
    table = pd.DataFrame(rows, columns=["sample_id", "score"])
    repeated = table["sample_id"].duplicated()
    if repeated.any():
        raise HetcvError(f"{path}: case id {table['sample_id'][repeated].iloc[0]!r} appears twice")
    return table


def with_nnunet_scores(
    table: pd.DataFrame, summary: str | Path, source: dict, where: str
) -> pd.DataFrame:
    """A features table with each case's score from an nnU-Net ``summary.json``.

    Parameters
    ----------
    table : DataFrame
        The embedding table: ``sample_id`` (the case id), the embedding, metadata.
    summary : str or Path
        The ``summary.json``.
    source : dict
        ``nnunet_label``, ``nnunet_metric`` and ``score_column``.
    where : str
        The table's path, for errors.

    Returns
    -------
    DataFrame
        ``table`` with the ``score_column`` added.

    Raises
    ------
    HetcvError
        When a case of the table has no score in the summary.
    """
    scores = nnunet_case_scores(
        summary, str(source["nnunet_label"]), source["nnunet_metric"]
    ).rename(columns={"score": source["score_column"]})
    if "sample_id" not in table:
        raise HetcvError(f"{where}: column 'sample_id' (the case id) not found")
    merged = table.astype({"sample_id": str}).merge(scores, on="sample_id", how="left")
    missing = merged[source["score_column"]].isna()
    if missing.any():
        raise HetcvError(
            f"{where}: case {merged['sample_id'][missing].iloc[0]!r} has no score in {summary}"
        )
    return merged


def _regressed(rows: pd.DataFrame, table: pd.DataFrame, where: str) -> pd.DataFrame:
    if "prediction" not in table:
        raise HetcvError(f"{where}: column 'prediction' not found")
    prediction = pd.to_numeric(table["prediction"], errors="coerce").to_numpy(np.float64)
    if not np.isfinite(prediction).all():
        row = int(np.flatnonzero(~np.isfinite(prediction))[0])
        raise HetcvError(f"{where}: row {row}: prediction is missing or not a number")
    squared = (prediction - rows["target"].to_numpy(np.float64)) ** 2
    return rows.assign(prediction=prediction, sq_error=squared, loss=squared)


def run_import_features_job(inputs: dict, outputs: dict, params: dict) -> None:
    """The import_features rule: check the table, write the manifest and every held-out row.

    Parameters
    ----------
    inputs : dict
        ``source`` (``source.table``) and, with ``source.nnunet_summary``, ``nnunet``.
    outputs : dict
        ``manifest`` and ``held_out`` (Parquet).
    params : dict
        ``task``, ``embedding``, ``metadata_columns``, ``pca_components`` and, for a score
        task, ``score`` (``column``, ``range``, ``higher_is_better``) and ``nnunet``
        (``nnunet_label``, ``nnunet_metric``, ``score_column``; None without a summary).
    """

    table = read_features_table(inputs["source"])
    if "nnunet" in inputs:
        table = with_nnunet_scores(table, inputs["nnunet"], params["nnunet"], inputs["source"])
    manifest, held_out = held_out_features(
        table,
        where=inputs["source"],
        score=params.get("score"),
        labels=params.get("labels"),
        **{key: params[key] for key in ("task", "embedding", "metadata_columns", "pca_components")},
    )
    write_parquet(held_out, outputs["held_out"])
    write_parquet(manifest, outputs["manifest"])
