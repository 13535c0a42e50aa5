import pandas as pd
from helpers import synthetic_features

from hetcv.cluster import run_cluster_job
from hetcv.io import write_parquet
from hetcv.paths import FOLD_TABLES

CLUSTERING = dict(
    k=[2, 3],
    repeats=2,
    within="all",
    error_aware=False,
    fcm={"m": 2.0, "error": 1e-5, "maxiter": 300},
)


def cluster_job(directory, name, features, manifest, clustering, folds, seeds):
    """Run the cluster rule's job on ``features`` (one path per fold); its output paths, per
    table kind one per algorithm."""
    outputs = {
        kind: [directory / f"{name}_{kind}_{a}.parquet" for a in clustering["algorithms"]]
        for kind in FOLD_TABLES
    }
    run_cluster_job(
        {"features": [str(path) for path in features], "manifest": str(manifest)},
        {kind: [str(path) for path in paths] for kind, paths in outputs.items()},
        {
            "task": "classification",
            "metric": "accuracy",
            "nrmse_normalizer": None,
            "n": 90,
            "folds": folds,
            "clustering": {**clustering, "seeds": seeds},
        },
    )
    return outputs


def test_same_seed_gives_byte_identical_cluster_tables(tmp_path):
    features = tmp_path / "features.parquet"
    table = synthetic_features(n=60, seed=4)
    write_parquet(table, features)
    manifest = tmp_path / "manifest.parquet"
    write_parquet(table[["sample_id", "target"]], manifest)
    clustering = {
        **CLUSTERING,
        "algorithms": ["gmm", "kmeans"],
        "pca_components": 4,
        "null_permutations": 19,
    }
    outputs = {}
    for attempt, seed in (("first", 11), ("again", 11), ("other", 12)):
        paths = cluster_job(tmp_path, attempt, [features], manifest, clustering, [0], [seed])
        outputs[attempt] = {
            f"{kind}_{a}": path.read_bytes()
            for kind, files in paths.items()
            for a, path in zip(clustering["algorithms"], files, strict=True)
        }
    assert outputs["first"] == outputs["again"]
    assert outputs["first"]["fold_assignments_gmm"] != outputs["other"]["fold_assignments_gmm"]
    assert outputs["first"]["fold_assignments_gmm"] != outputs["first"]["fold_assignments_kmeans"]


def test_a_sample_size_job_analyses_each_fold_as_a_job_of_its_own(tmp_path):
    folds = {fold: synthetic_features(n=40 + 10 * fold, seed=fold) for fold in (0, 1)}
    paths = {}
    for fold, table in folds.items():
        paths[fold] = tmp_path / f"fold{fold}.parquet"
        write_parquet(table.assign(fold=fold), paths[fold])
    manifest = tmp_path / "manifest.parquet"
    write_parquet(pd.concat(folds.values())[["sample_id", "target"]], manifest)
    clustering = {
        **CLUSTERING,
        "algorithms": ["kmeans", "fcm"],
        "pca_components": 3,
        "null_permutations": 9,
    }

    def run(name, fold_numbers, seeds):
        features = [paths[fold] for fold in fold_numbers]
        outputs = cluster_job(tmp_path, name, features, manifest, clustering, fold_numbers, seeds)
        return {kind: [pd.read_parquet(p) for p in files] for kind, files in outputs.items()}

    together = run("together", [0, 1], [7, 8])
    alone = [run("fold0", [0], [7]), run("fold1", [1], [8])]
    for kind in FOLD_TABLES:
        for position in range(len(clustering["algorithms"])):
            separately = pd.concat([job[kind][position] for job in alone], ignore_index=True)
            pd.testing.assert_frame_equal(together[kind][position], separately)
            assert sorted(together[kind][position]["fold"].unique()) == [0, 1]
