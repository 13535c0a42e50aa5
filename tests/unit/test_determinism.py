import pandas as pd
from test_cluster import synthetic_features

from hetcv.analysis import run_cluster_job
from hetcv.io import write_parquet


def test_same_seed_gives_byte_identical_cluster_tables(tmp_path):
    features = tmp_path / "features.parquet"
    table = synthetic_features(n=60, seed=4)
    write_parquet(table, features)
    manifest = tmp_path / "manifest.parquet"
    write_parquet(table[["sample_id", "target"]], manifest)
    clustering = dict(
        algorithms=["gmm", "kmeans"],
        k=[2, 3],
        repeats=2,
        pca_components=4,
        fcm=None,
        within="all",
        error_aware=False,
        null_permutations=19,
    )
    outputs = {}
    for attempt, seed in (("first", 11), ("again", 11), ("other", 12)):
        paths = {
            name: [tmp_path / f"{attempt}_{name}_{a}.parquet" for a in clustering["algorithms"]]
            for name in ("assignments", "cluster_stats", "pairs", "runs")
        }
        run_cluster_job(
            {"features": [str(features)], "manifest": str(manifest)},
            {name: [str(path) for path in files] for name, files in paths.items()},
            {
                "task": "classification",
                "metric": "accuracy",
                "nrmse_normalizer": None,
                "n": 60,
                "folds": [0],
                "clustering": {**clustering, "seeds": [seed]},
            },
        )
        outputs[attempt] = {
            f"{name}_{a}": path.read_bytes()
            for name, files in paths.items()
            for a, path in zip(clustering["algorithms"], files, strict=True)
        }
    assert outputs["first"] == outputs["again"]
    assert outputs["first"]["assignments_gmm"] != outputs["other"]["assignments_gmm"]
    assert outputs["first"]["assignments_gmm"] != outputs["first"]["assignments_kmeans"]


def test_a_sample_size_job_analyses_each_fold_as_a_job_of_its_own(tmp_path):
    folds = {fold: synthetic_features(n=40 + 10 * fold, seed=fold) for fold in (0, 1)}
    paths = {}
    for fold, table in folds.items():
        paths[fold] = tmp_path / f"fold{fold}.parquet"
        write_parquet(table.assign(fold=fold), paths[fold])
    manifest = tmp_path / "manifest.parquet"
    write_parquet(pd.concat(folds.values())[["sample_id", "target"]], manifest)
    clustering = dict(
        algorithms=["kmeans", "fcm"],
        k=[2, 3],
        repeats=2,
        pca_components=3,
        fcm={"m": 2.0, "error": 1e-5, "maxiter": 300},
        within="all",
        error_aware=False,
        null_permutations=9,
    )
    kinds = ("assignments", "cluster_stats", "pairs", "runs")

    def run(name, fold_numbers, seeds):
        outputs = {
            kind: [str(tmp_path / f"{name}_{kind}_{a}.parquet") for a in clustering["algorithms"]]
            for kind in kinds
        }
        run_cluster_job(
            {"features": [str(paths[f]) for f in fold_numbers], "manifest": str(manifest)},
            outputs,
            {
                "task": "classification",
                "metric": "accuracy",
                "nrmse_normalizer": None,
                "n": 90,
                "folds": fold_numbers,
                "clustering": {**clustering, "seeds": seeds},
            },
        )
        return {kind: [pd.read_parquet(p) for p in files] for kind, files in outputs.items()}

    together = run("together", [0, 1], [7, 8])
    alone = [run("fold0", [0], [7]), run("fold1", [1], [8])]
    for kind in kinds:
        for position in range(len(clustering["algorithms"])):
            separately = pd.concat([job[kind][position] for job in alone], ignore_index=True)
            pd.testing.assert_frame_equal(together[kind][position], separately)
            assert sorted(together[kind][position]["fold"].unique()) == [0, 1]
