"""Helpers shared by the tests: synthetic held-out tables and one fold clustered as the
cluster job clusters it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hetcv.cluster import CLUSTER_TABLES, FoldClustering, clusterings_by_k, fold_space
from hetcv.columns import FEATURE_COLUMNS

FCM = {"m": 2.0, "error": 1e-6, "maxiter": 500}


def synthetic_features(n=80, seed=0):
    """A held-out features table of ``n`` random 512-d samples, 80 % right, two classes."""
    rng = np.random.default_rng(seed)
    table = pd.DataFrame(rng.normal(size=(n, 512)).astype(np.float32), columns=FEATURE_COLUMNS)
    table.insert(0, "sample_id", [f"s{i}" for i in range(n)])
    table.insert(1, "target", rng.integers(0, 2, size=n))
    table.insert(2, "correct", rng.random(n) < 0.8)
    table.insert(3, "loss", rng.exponential(size=n))
    return table


def clustered_fold(features, *, algorithm, k, repeats, fcm, null_permutations, **space):
    """One fold's four tables for every k, as :func:`hetcv.cluster.run_cluster_job` makes them
    (:func:`~hetcv.cluster.fold_space`, then :func:`~hetcv.cluster.clusterings_by_k`).

    ``space`` holds ``metric``, ``pca_components``, ``within``, ``error_aware`` and ``seed``.
    """
    shared = fold_space(features, null_permutations=null_permutations, **space)
    parts = list(
        clusterings_by_k(
            features,
            shared,
            metric=space["metric"],
            algorithm=algorithm,
            k=k,
            repeats=repeats,
            fcm=fcm,
            error_aware=space["error_aware"],
            seed=space["seed"],
        )
    )
    return FoldClustering(
        **{
            table: pd.concat([getattr(part, table) for part in parts], ignore_index=True)
            for table in CLUSTER_TABLES
        }
    )
