"""What the clusters are made of: each metadata column profiled per cluster.

For every sample size and every ``metadata_columns`` entry, over the selected clustering's
consensus clusters (one row per held-out sample, ``clusters_per_sample.csv``):

- a categorical column (text, boolean, or numbers with at most :data:`MAX_LEVELS` distinct
  values) gets each level's share of each cluster against its share overall, the lift
  (their ratio), and Pearson's chi-square test of independence of cluster and level with
  Cramér's V, √(χ² / (N · (min(rows, columns) − 1)));
- a numeric column gets each cluster's median and interquartile range against the overall
  median, and the Kruskal–Wallis test across clusters with its effect size
  ε² = H / (N − 1).

The p-values are Holm-adjusted across the columns, within each sample size. Samples with a
missing value are left out of that column's profile.

Cluster numbers are per fold (numbered by size), so pooling "cluster 2" over folds pools the
third-largest cluster of each. What the *weakest* cluster holds is therefore profiled on its
own (:func:`weakest_profile`): the cluster that each fold's cross-fitted ranking chose as
worst, pooled over folds, against the rest, as :data:`WEAKEST` (cluster −1) rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from hetcv.planted import class_profile
from hetcv.stats import holm

MAX_LEVELS = 5  # numeric codes (scanner 1, 2, 3) are levels, not quantities
WEAKEST = -1  # the cluster value of the weakest-cluster rows (each fold's own weakest)


def is_categorical(values: pd.Series) -> bool:
    """Whether a metadata column is profiled by level shares (else by medians).

    Parameters
    ----------
    values : Series
        The column's non-missing values.

    Returns
    -------
    bool
        True for text and booleans, and for numbers with at most :data:`MAX_LEVELS` levels.
    """
    if values.dtype == bool or not pd.api.types.is_numeric_dtype(values):
        return True
    return values.nunique() <= MAX_LEVELS


def categorical_profile(cluster: np.ndarray, values: pd.Series) -> tuple[pd.DataFrame, dict]:
    """Level shares per cluster and the chi-square test of one categorical column.

    Parameters
    ----------
    cluster : ndarray of shape (n_samples,)
        Each sample's consensus cluster.
    values : Series of length n_samples
        The column's values (no missing ones).

    Returns
    -------
    rows : DataFrame
        One row per (cluster, level): ``cluster, level, count, share`` (% of the cluster),
        ``overall_share`` (% of all samples) and ``lift`` (share / overall share).
    test : dict
        ``test`` ("chi-square"), ``statistic``, ``df``, ``effect`` (Cramér's V), ``p_value``.
    """
    table = pd.crosstab(cluster, values.astype(str).to_numpy())
    counts = table.to_numpy(dtype=np.float64)
    overall = 100 * counts.sum(axis=0) / counts.sum()
    share = 100 * counts / counts.sum(axis=1, keepdims=True)
    rows = pd.DataFrame(
        {
            "cluster": np.repeat(table.index.to_numpy(), table.shape[1]),
            "level": np.tile(table.columns.to_numpy(), table.shape[0]),
            "count": counts.ravel().astype(np.int64),
            "share": share.ravel(),
            "overall_share": np.tile(overall, table.shape[0]),
        }
    )
    rows["lift"] = rows["share"] / rows["overall_share"]
    if min(counts.shape) < 2:
        return rows, {
            "test": "chi-square",
            "statistic": np.nan,
            "df": 0,
            "effect": np.nan,
            "p_value": np.nan,
        }
    result = scipy_stats.chi2_contingency(counts, correction=False)
    cramers_v = np.sqrt(result.statistic / (counts.sum() * (min(counts.shape) - 1)))
    test = {
        "test": "chi-square",
        "statistic": float(result.statistic),
        "df": int(result.dof),
        "effect": float(cramers_v),
        "p_value": float(result.pvalue),
    }
    return rows, test


def numeric_profile(cluster: np.ndarray, values: pd.Series) -> tuple[pd.DataFrame, dict]:
    """Medians and quartiles per cluster and the Kruskal–Wallis test of one numeric column.

    Parameters
    ----------
    cluster, values
        As for :func:`categorical_profile`.

    Returns
    -------
    rows : DataFrame
        One row per cluster: ``cluster, count, median, q1, q3`` and ``overall_median``.
    test : dict
        ``test`` ("Kruskal-Wallis"), ``statistic`` (H), ``df``, ``effect`` (ε²), ``p_value``.
    """
    values = values.to_numpy(dtype=np.float64)
    clusters = np.unique(cluster)
    groups = [values[cluster == c] for c in clusters]
    rows = pd.DataFrame(
        {
            "cluster": clusters,
            "count": [len(group) for group in groups],
            "median": [np.median(group) for group in groups],
            "q1": [np.percentile(group, 25) for group in groups],
            "q3": [np.percentile(group, 75) for group in groups],
            "overall_median": np.median(values),
        }
    )
    test = {
        "test": "Kruskal-Wallis",
        "statistic": np.nan,
        "df": len(clusters) - 1,
        "effect": np.nan,
        "p_value": np.nan,
    }
    if len(clusters) > 1 and np.ptp(values) > 0:
        result = scipy_stats.kruskal(*groups)
        test.update(
            statistic=float(result.statistic),
            effect=float(result.statistic / (len(values) - 1)),
            p_value=float(result.pvalue),
        )
    return rows, test


def metadata_profiles(clusters: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Every metadata column profiled per cluster, at every sample size.

    Parameters
    ----------
    clusters : DataFrame
        ``clusters_per_sample.csv``: ``n``, ``cluster`` and the metadata ``columns``.
    columns : list of str
        The source's ``metadata_columns``.

    Returns
    -------
    DataFrame
        One row per (n, column, cluster[, level]): ``n, column, kind`` (categorical or
        numeric), the rows of :func:`categorical_profile` or :func:`numeric_profile`, and
        the column's test (``test, statistic, df, effect, p_value``) with ``p_holm``
        (Holm across the columns at that n).
    """
    if not columns:
        return pd.DataFrame(columns=["n", "column", "kind", "cluster", "p_value", "p_holm"])
    parts = []
    for n, at_n in clusters.groupby("n", sort=True):
        at_size = []
        for column in columns:
            known = at_n[at_n[column].notna()]
            if known.empty:
                continue
            values = known[column]
            kind = "categorical" if is_categorical(values) else "numeric"
            profile = categorical_profile if kind == "categorical" else numeric_profile
            rows, test = profile(known["cluster"].to_numpy(), values)
            at_size.append(rows.assign(n=n, column=column, kind=kind, **test))
        adjusted = holm(np.array([part["p_value"].iloc[0] for part in at_size]))
        parts += [part.assign(p_holm=p) for part, p in zip(at_size, adjusted, strict=True)]
    table = pd.concat(parts, ignore_index=True)
    leading = ["n", "column", "kind", "cluster"]
    return table[leading + [c for c in table.columns if c not in leading]]


def over_represented(profile: pd.DataFrame, n: int, cluster: int) -> pd.Series | None:
    """The categorical level most over-represented in one cluster (the highest lift).

    Parameters
    ----------
    profile : DataFrame
        :func:`metadata_profiles`.
    n, cluster : int
        The sample size and the cluster (e.g. the weakest).

    Returns
    -------
    Series or None
        That row (``column, level, share, overall_share, lift, p_holm`` …), or None when no
        categorical level is over-represented (lift > 1).
    """
    if profile.empty or "lift" not in profile:
        return None
    rows = profile[(profile["n"] == n) & (profile["cluster"] == cluster)]
    rows = rows[rows["kind"] == "categorical"]
    rows = rows[rows["lift"] > 1]
    if rows.empty:
        return None
    return rows.loc[rows["lift"].idxmax()]


def weakest_profile(
    clusters: pd.DataFrame, weakest: pd.DataFrame, columns: list[str]
) -> pd.DataFrame:
    """Every metadata column profiled in each fold's weakest cluster, against the rest.

    Parameters
    ----------
    clusters : DataFrame
        ``n, fold, cluster`` and the metadata ``columns`` of every held-out sample.
    weakest : DataFrame
        ``n, fold, cluster``: the weakest cluster of each fold
        (:attr:`hetcv.heterogeneity.WeakestCluster.fold_cluster`).
    columns : list of str
        The source's ``metadata_columns``.

    Returns
    -------
    DataFrame
        :func:`metadata_profiles`' rows of the weakest clusters' samples (``cluster`` =
        :data:`WEAKEST`), shares against all samples, tests of weakest against the rest.
    """
    marked = clusters.merge(
        weakest.rename(columns={"cluster": "weak"}), on=["n", "fold"], how="left"
    )
    grouped = marked.assign(cluster=np.where(marked["cluster"] == marked["weak"], WEAKEST, 0))
    profile = metadata_profiles(grouped.drop(columns="weak"), columns)
    return profile[profile["cluster"] == WEAKEST].reset_index(drop=True)


def slice_profile(
    inside: np.ndarray, metadata: pd.DataFrame, classes: np.ndarray | None = None
) -> str:
    """What sets a slice apart in the metadata: each column's most over-represented level.

    Parameters
    ----------
    inside : ndarray of shape (n_samples,), bool
        Membership of the slice (held-out rows of every fold).
    metadata : DataFrame
        The metadata columns, row for row.
    classes : ndarray of shape (n_samples,), optional
        The true class, row for row: each class the slice holds then gets its own profile of
        the categorical columns (a shortcut slice gathers the marker's absence in one class
        and its presence in the other, which the overall share hides).

    Returns
    -------
    str
        ``"site B 62 % (30 % overall); age 71.0 (64.2 overall)"``: for each categorical column
        (:func:`hetcv.profiles.is_categorical`) the level whose share rises most in the slice,
        for each numeric one the slice's median against the overall one; with ``classes``,
        then ``"; within class 1 (40 of them): marker no 88 % (3 % in the class)"`` for each
        class holding at least a tenth of the slice; empty without metadata.
    """
    parts = []
    for column in metadata.columns:
        values = metadata[column]
        present = values.notna().to_numpy()
        if not (present & inside).any():
            continue
        if is_categorical(values[present]):
            inner = values[present & inside].value_counts(normalize=True)
            outer = values[present].value_counts(normalize=True)
            level = (inner - outer.reindex(inner.index)).idxmax()
            parts.append(
                f"{column} {level} {100 * inner[level]:.0f} % ({100 * outer[level]:.0f} % overall)"
            )
        else:
            parts.append(
                f"{column} {values[present & inside].median():.3g} "
                f"({values[present].median():.3g} overall)"
            )
    if classes is not None and parts:
        parts += _class_parts(inside, metadata, np.asarray(classes))
    return "; ".join(parts)


def _class_parts(inside: np.ndarray, metadata: pd.DataFrame, classes: np.ndarray) -> list[str]:
    """``within class 1 (40 of them): marker no 88 % (3 % in the class)`` per class held."""
    categorical = [c for c in metadata.columns if is_categorical(metadata[c].dropna())]
    if not categorical:
        return []
    present = metadata[categorical].notna().all(axis=1).to_numpy()
    rows = class_profile(
        inside & present,
        classes,
        metadata[categorical].reset_index(drop=True).astype(object),
    )
    parts = []
    for row in rows:
        if row["members"] < 0.1 * inside.sum():
            continue
        parts.append(
            f"within class {row['class']} ({row['members']} of them): {row['column']} "
            f"{row['level']} {100 * row['share']:.0f} % ({100 * row['class_share']:.0f} % "
            "in the class)"
        )
    return parts
