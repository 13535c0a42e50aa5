"""Nested, stratified subsamples and K stratified folds.

One seeded ordering of the whole dataset is drawn per dataset; the sample of size ``n`` is
its first ``n`` entries, so the 100-sample set lies inside the 300-sample set, and so on.
The ordering is systematic within each stratum (class, or target quantile bin for
regression), so every prefix holds each stratum in proportion, to within two samples.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from hetcv.errors import HetcvError

REGRESSION_BINS = 10


def resolve_sample_size(size: int | str, total: int) -> int:
    """An integer sample size from an integer or ``half`` / ``all`` of ``total`` samples."""
    if size == "all":
        return total
    if size == "half":
        return total // 2
    return int(size)


def resolve_sample_sizes(sizes: list, total: int, folds: int, key: str) -> list[int]:
    """Resolve and check ``datasets.<name>.sample_sizes``; ``key`` names it in errors."""
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
    """Stratum of each sample: the class, or the target's quantile bin for regression."""
    if task == "classification":
        return np.unique(target, return_inverse=True)[1]
    return pd.qcut(target, q=bins, labels=False, duplicates="drop").astype(np.int64)


def nested_order(stratum: np.ndarray, seed: int) -> np.ndarray:
    """A permutation of ``range(len(stratum))`` whose every prefix is stratified.

    Member ``j`` (random order) of a stratum of size ``m`` gets the key ``(j + u) / m`` with a
    random offset ``u`` per stratum; sorting by key interleaves the strata in proportion.
    """
    rng = np.random.default_rng(seed)
    key = np.empty(len(stratum), dtype=np.float64)
    for value in np.unique(stratum):
        members = rng.permutation(np.flatnonzero(stratum == value))
        key[members] = (np.arange(len(members)) + rng.random()) / len(members)
    tiebreak = rng.random(len(stratum))
    return np.lexsort((tiebreak, key))


def make_split(
    target: np.ndarray, task: str, n: int, folds: int, order_seed: int, fold_seed: int
) -> pd.DataFrame:
    """The sample of size ``n`` and its folds.

    ``order_seed`` must not depend on ``n`` (that is what makes the samples nested);
    ``fold_seed`` may. Returns ``index`` (row in the manifest) and ``fold``, sorted by index.
    """
    if n > len(target):
        raise HetcvError(f"sample size {n} is larger than the dataset ({len(target)} samples)")
    chosen = nested_order(strata(target, task), order_seed)[:n]
    bins = max(2, min(REGRESSION_BINS, n // (2 * folds)))
    chosen_strata = strata(target[chosen], task, bins=bins)
    fold = np.empty(n, dtype=np.int64)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=fold_seed % 2**32)
    for k, (_, held_out) in enumerate(splitter.split(np.zeros(n), chosen_strata)):
        fold[held_out] = k
    split = pd.DataFrame({"index": chosen.astype(np.int64), "fold": fold})
    return split.sort_values("index", ignore_index=True)


def run_split_job(
    *, manifest: str, out_split: str, dataset: str, n: int, task: str, folds: int, seed: int
) -> None:
    """The split rule: write ``sample_id``, ``index`` and ``fold`` of the size-``n`` sample."""
    from hetcv.io import write_parquet
    from hetcv.seeding import derive_seed

    table = pd.read_parquet(manifest)
    split = make_split(
        table["target"].to_numpy(),
        task,
        n,
        folds,
        order_seed=derive_seed(seed, dataset, "order"),
        fold_seed=derive_seed(seed, dataset, n, "folds"),
    )
    split.insert(0, "sample_id", table["sample_id"].to_numpy()[split["index"].to_numpy()])
    write_parquet(split, out_split)
