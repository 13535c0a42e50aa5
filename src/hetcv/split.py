"""Nested, stratified subsamples and K stratified folds, patient-level when grouped.

One seeded ordering of the whole dataset is drawn per dataset; the sample of size ``n`` is
its first ``n`` entries, so the 100-sample set lies inside the 300-sample set, and so on.
The ordering is systematic within each stratum (class, or target quantile bin for
regression), so every prefix holds each stratum in proportion, to within two samples.

With groups (``source.group_column``: a patient, a scanner session), the folds are drawn by
scikit-learn's ``StratifiedGroupKFold``: every group's samples in the subsample fall in one
fold, so no patient is both trained on and held out, and the strata are balanced as far as the
groups allow. A subsample may take only part of a large group, never split it across folds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from hetcv.errors import HetcvError
from hetcv.io import write_parquet
from hetcv.seeding import derive_seed

REGRESSION_BINS = 10


def resolve_sample_size(size: int | str, total: int) -> int:
    """An integer sample size from an integer or ``half`` / ``all`` of ``total`` samples.

    Parameters
    ----------
    size : int or {"half", "all"}
        One entry of ``datasets.<name>.sample_sizes``.
    total : int
        The dataset's number of samples.

    Returns
    -------
    int
        ``total // 2`` for ``half``, ``total`` for ``all``, else ``int(size)`` (unchecked).
    """
    if size == "all":
        return total
    if size == "half":
        return total // 2
    return int(size)


def resolve_sample_sizes(sizes: list, total: int, folds: int, key: str) -> list[int]:
    """Resolve and check ``datasets.<name>.sample_sizes``; ``key`` names it in errors.

    Parameters
    ----------
    sizes : list of int or str
        The configured sizes (see :func:`resolve_sample_size`).
    total : int
        The dataset's number of samples.
    folds : int
        The number of folds; every size needs at least two samples per fold.
    key : str
        The config key quoted in errors.

    Returns
    -------
    list of int
        The resolved sizes, ascending.

    Raises
    ------
    HetcvError
        For a size above ``total`` or below ``2 * folds``, or two entries resolving alike.
    """
    resolved = [resolve_sample_size(size, total) for size in sizes]
    for size, n in zip(sizes, resolved, strict=True):
        if n > total:
            raise HetcvError(f"{key}: {size} is larger than the dataset ({total} samples)")
        if n < 2 * folds:
            raise HetcvError(f"{key}: {size} is too small for {folds} folds (need >= {2 * folds})")
    if len(set(resolved)) != len(resolved):
        raise HetcvError(f"{key}: {sizes} resolve to repeated sizes {resolved}")
    return sorted(resolved)


def strata(target: np.ndarray, task: str, bins: int = REGRESSION_BINS) -> np.ndarray:
    """Stratum of each sample: the class, or the target's quantile bin for regression.

    Parameters
    ----------
    target : ndarray of shape (n,)
        Class labels or regression values.
    task : {"classification", "regression"}
    bins : int, default=REGRESSION_BINS
        Quantile bins for regression (fewer where quantiles coincide).

    Returns
    -------
    ndarray of shape (n,), int
        Stratum codes from 0 (classes in sorted order, or bins from the lowest).
    """
    if task in ("classification", "multilabel"):  # multilabel: the set of labels, coded
        return np.unique(target, return_inverse=True)[1]
    return pd.qcut(target, q=bins, labels=False, duplicates="drop").astype(np.int64)


def nested_order(stratum: np.ndarray, seed: int) -> np.ndarray:
    """A permutation of ``range(len(stratum))`` whose every prefix is stratified.

    Member ``j`` (random order) of a stratum of size ``m`` gets the key ``(j + u) / m`` with a
    random offset ``u`` per stratum; sorting by key interleaves the strata in proportion.

    Parameters
    ----------
    stratum : ndarray of shape (n,), int
        Each sample's stratum (see :func:`strata`).
    seed : int
        Seeds the within-stratum orders, offsets and tie-breaks.

    Returns
    -------
    ndarray of shape (n,), int
        The sample indices in nested-sample order.
    """
    rng = np.random.default_rng(seed)
    key = np.empty(len(stratum), dtype=np.float64)
    for value in np.unique(stratum):
        members = rng.permutation(np.flatnonzero(stratum == value))
        key[members] = (np.arange(len(members)) + rng.random()) / len(members)
    tiebreak = rng.random(len(stratum))
    return np.lexsort((tiebreak, key))


def make_split(
    target: np.ndarray,
    task: str,
    n: int,
    folds: int,
    order_seed: int,
    fold_seed: int,
    groups: np.ndarray | None = None,
) -> pd.DataFrame:
    """The sample of size ``n`` and its folds.

    ``order_seed`` must not depend on ``n`` (that is what makes the samples nested);
    ``fold_seed`` may. Returns ``index`` (row in the manifest) and ``fold``, sorted by index.

    Parameters
    ----------
    target : ndarray of shape (n_total,)
        The manifest's targets.
    task : {"classification", "regression"}
    n : int
        The sample size.
    folds : int
        The number of stratified folds.
    order_seed, fold_seed : int
        Seeds of the nested ordering and of the fold assignment.
    groups : ndarray of shape (n_total,), optional
        Each sample's group (patient); a group's samples in the subsample share one fold.

    Returns
    -------
    DataFrame
        ``n`` rows, columns ``index`` (int64 manifest row), ``fold`` (int64,
        ``0..folds-1``) and, with ``groups``, ``group``.

    Raises
    ------
    HetcvError
        When ``n`` exceeds the number of samples, or the subsample holds fewer groups than
        folds.
    """
    if n > len(target):
        raise HetcvError(f"sample size {n} is larger than the dataset ({len(target)} samples)")
    chosen = nested_order(strata(target, task), order_seed)[:n]
    bins = max(2, min(REGRESSION_BINS, n // (2 * folds)))
    chosen_strata = strata(target[chosen], task, bins=bins)
    fold = np.empty(n, dtype=np.int64)
    random_state = fold_seed % 2**32
    if groups is None:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=random_state)
        held_out_sets = splitter.split(np.zeros(n), chosen_strata)
    else:
        chosen_groups = groups[chosen]
        if len(np.unique(chosen_groups)) < folds:
            raise HetcvError(
                f"source.group_column: the sample of {n} holds "
                f"{len(np.unique(chosen_groups))} group(s), fewer than folds = {folds}"
            )
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=random_state)
        held_out_sets = splitter.split(np.zeros(n), chosen_strata, chosen_groups)
    for k, (_, held_out) in enumerate(held_out_sets):
        fold[held_out] = k
    split = pd.DataFrame({"index": chosen.astype(np.int64), "fold": fold})
    if groups is not None:
        split["group"] = chosen_groups
    return split.sort_values("index", ignore_index=True)


def inner_validation_split(
    target: np.ndarray,
    task: str,
    fraction: float,
    seed: int,
    groups: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Split a fold's training samples into the samples trained on and a validation set.

    The validation set (early stopping's) is ``round(fraction × n)`` samples, stratified as
    the folds are (classes, or target quantile bins): the first of a seeded nested order
    (:func:`nested_order`). With groups, it is whole groups instead: one fold of
    ``round(1 / fraction)`` stratified group folds, so that no patient is on both sides.

    Parameters
    ----------
    target : ndarray of shape (n,)
        The training samples' targets.
    task : {"classification", "regression"}
    fraction : float
        The share held out for validation, in (0, 0.5].
    seed : int
        Seeds the choice.
    groups : ndarray of shape (n,), optional
        Each sample's group (patient).

    Returns
    -------
    fit, validation : ndarray of int
        Sorted positions in ``0..n-1``; together each position once.

    Raises
    ------
    HetcvError
        Naming ``train.early_stopping.validation_fraction`` when either side would be
        empty (or, grouped, when there are fewer groups than group folds).
    """
    n = len(target)
    key = "train.early_stopping.validation_fraction"
    if groups is None:
        size = int(round(fraction * n))
        if size < 1 or n - size < 2:
            raise HetcvError(
                f"{key}: {fraction} of {n} training samples leaves no validation sample "
                "or too few to train on"
            )
        bins = max(2, min(REGRESSION_BINS, n // 4))
        order = nested_order(strata(target, task, bins=bins), seed)
        validation = np.sort(order[:size])
    else:
        splits = max(2, int(round(1 / fraction)))
        if len(np.unique(groups)) < splits:
            raise HetcvError(
                f"{key}: {fraction} needs {splits} groups among the training samples, "
                f"which hold {len(np.unique(groups))}"
            )
        splitter = StratifiedGroupKFold(n_splits=splits, shuffle=True, random_state=seed % 2**32)
        bins = max(2, min(REGRESSION_BINS, n // (2 * splits)))
        _, validation = next(splitter.split(np.zeros(n), strata(target, task, bins), groups))
        validation = np.sort(validation)
    return np.setdiff1d(np.arange(n), validation), validation


def run_split_job(inputs: dict, outputs: dict, params: dict) -> None:
    """The split rule: write ``sample_id``, ``index``, ``fold`` (``group``) of the size-n sample.

    Parameters
    ----------
    inputs : dict
        ``manifest``.
    outputs : dict
        ``split`` (Parquet path).
    params : dict
        ``dataset``, ``n``, ``task``, ``folds`` and ``seed`` (the study's seed).
    """

    dataset, n, seed = params["dataset"], params["n"], params["seed"]
    table = pd.read_parquet(inputs["manifest"])
    split = make_split(
        table["target"].to_numpy(),
        params["task"],
        n,
        params["folds"],
        order_seed=derive_seed(seed, dataset, "order"),
        fold_seed=derive_seed(seed, dataset, n, "folds"),
        groups=table["group"].to_numpy() if "group" in table else None,
    )
    split.insert(0, "sample_id", table["sample_id"].to_numpy()[split["index"].to_numpy()])
    write_parquet(split, outputs["split"])
