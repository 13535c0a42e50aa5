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
            {"features": str(features), "manifest": str(manifest)},
            {name: [str(path) for path in files] for name, files in paths.items()},
            {
                "task": "classification",
                "metric": "accuracy",
                "nrmse_normalizer": None,
                "n": 60,
                "fold": 0,
                "clustering": {**clustering, "seed": seed},
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
