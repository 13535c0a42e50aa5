"""What the cluster pictures show, as tables: the scatter's points and the galleries' samples.

A picture's "error" is a wrong prediction (classification) or, for regression, a squared
error in the fold's worst 10 % (:data:`REGRESSION_ERROR_QUANTILE`): regression has no wrong
answers, only worse ones.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hetcv.cluster import pca_scores
from hetcv.columns import feature_columns

GALLERY_IMAGES = 8
REGRESSION_ERROR_QUANTILE = 0.9


def error_flags(table: pd.DataFrame, task: str) -> np.ndarray:
    """Which samples the pictures mark as errors.

    Parameters
    ----------
    table : DataFrame
        Per-sample rows with ``correct`` (classification) or ``sq_error`` (regression).
    task : {"classification", "regression"}

    Returns
    -------
    ndarray of bool, shape (len(table),)
    """
    if task == "classification":
        return ~table["correct"].to_numpy(dtype=bool)
    squared = table["sq_error"].to_numpy()
    return squared >= np.quantile(squared, REGRESSION_ERROR_QUANTILE)


def scatter_points(
    fold: pd.DataFrame, clusters: pd.DataFrame, task: str, pca_components: int
) -> pd.DataFrame:
    """One held-out fold on the first two principal components of its features.

    These are the leading axes of the space the fold was clustered in (the same PCA).

    Parameters
    ----------
    fold : DataFrame of shape (n_held_out, ...)
        The fold's ``features.parquet``.
    clusters : DataFrame
        ``clusters_per_sample.csv`` rows of this fold (``sample_id``, ``cluster``).
    task : {"classification", "regression"}
    pca_components : int
        The clustering's ``pca_components`` (at least 2 are computed here).

    Returns
    -------
    DataFrame of shape (n_held_out, 4)
        ``pc1``, ``pc2``, ``cluster`` and ``error`` per sample, in the fold's order.
    """
    embedding = fold[feature_columns(fold.columns)].to_numpy()
    coordinates = pca_scores(embedding, max(2, pca_components))
    cluster = clusters.set_index("sample_id").loc[fold["sample_id"], "cluster"].to_numpy()
    return pd.DataFrame(
        {
            "pc1": coordinates[:, 0],
            "pc2": coordinates[:, 1],
            "cluster": cluster,
            "error": error_flags(fold, task),
        }
    )


def gallery_samples(clusters: pd.DataFrame, task: str) -> dict[int, tuple[list, list]]:
    """Each cluster's most typical samples and its worst errors.

    Parameters
    ----------
    clusters : DataFrame
        ``clusters_per_sample.csv`` rows of one sample size.
    task : {"classification", "regression"}

    Returns
    -------
    dict
        ``{cluster: (typical, worst)}``, each a list of up to :data:`GALLERY_IMAGES`
        ``sample_id``: the highest memberships, and the errors with the highest membership
        (classification) or the largest squared errors (regression).
    """
    flagged = clusters.assign(error=error_flags(clusters, task))
    worst_first = "membership" if task == "classification" else "sq_error"
    samples = {}
    for cluster, members in flagged.groupby("cluster"):
        typical = members.sort_values("membership", ascending=False)
        worst = members[members["error"]].sort_values(worst_first, ascending=False)
        samples[int(cluster)] = (
            typical["sample_id"].head(GALLERY_IMAGES).tolist(),
            worst["sample_id"].head(GALLERY_IMAGES).tolist(),
        )
    return samples
