"""A team's own model: a features table (embeddings 24 wide) through the whole workflow."""

import numpy as np
import pandas as pd
import pytest
from conftest import make_workdir, snakemake, write_config
from sklearn.metrics import roc_auc_score

from hetcv.slices import PER_SAMPLE_COLUMNS

WIDTH = 24
SIZES = (120, 240)


def embeddings_table(seed=0):
    """Three well-separated blobs; the model is right 95 % of the time, 60 % in blob 2 (site B)."""
    rng = np.random.default_rng(seed)
    total = max(SIZES)
    blob = rng.integers(0, 3, total)
    embedding = rng.normal(scale=4.0, size=(3, WIDTH))[blob] + rng.normal(size=(total, WIDTH))
    target = rng.integers(0, 2, total)
    frames = []
    for n in SIZES:
        right = rng.random(n) < np.where(blob[:n] == 2, 0.6, 0.95)
        predicted = np.where(right, target[:n], 1 - target[:n])
        frame = pd.DataFrame(
            {
                "sample_id": [f"s{i}" for i in range(n)],
                "n": n,
                "fold": rng.permutation(np.arange(n) % 3),
                "target": np.where(target[:n] == 1, "tumour", "normal"),
                "prediction": np.where(predicted == 1, 0.8, 0.2),
                "site": np.where(blob[:n] == 2, "B", "A"),
            }
        )
        columns = {f"emb_{j}": embedding[:n, j] for j in range(WIDTH)}
        frames.append(pd.concat([frame, pd.DataFrame(columns)], axis=1))
    return pd.concat(frames, ignore_index=True)


def features_study(table_path, **clustering):
    return {
        "datasets": {
            "mine": {
                "source": {
                    "kind": "features",
                    "table": str(table_path),
                    "embedding": "emb_",
                    "metadata_columns": ["site"],
                },
                "task": "classification",
            }
        },
        "clustering": {
            "algorithms": ["kmeans", "fcm"],
            "k": [2, 3],
            "repeats": 2,
            "null_permutations": 99,
            "bootstrap": 200,
            "selected": {"algorithm": "fcm", "k": 3},
            **clustering,
        },
        # Blobs of 80 samples: the paper's clustering is the finder that fits them.
        "slices": {"method": "worst_cluster"},
    }


@pytest.fixture(scope="module")
def features_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("features")
    embeddings_table().to_parquet(root / "embeddings.parquet", index=False)
    workdir = make_workdir(root / "study")
    config = write_config(workdir / "mine.yaml", features_study(root / "embeddings.parquet"))
    result = snakemake(workdir, "--configfile", str(config))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workdir, result.stdout + result.stderr


def test_nothing_is_trained_and_every_fold_is_the_tables(features_run):
    workdir, log = features_run
    results = workdir / "results/mine"
    assert not (results / "data/images.npy").exists()
    assert not list(results.glob("n*/fold*/model.pt")) and "rule train" not in log
    for n in SIZES:
        for fold in range(3):
            features = pd.read_parquet(results / f"n{n}/fold{fold}/features.parquet")
            assert len(features) == n // 3 and (features["n"] == n).all()
            assert list(features.columns[-WIDTH:]) == [f"f{j:03d}" for j in range(WIDTH)]


def test_statistics_find_the_weak_blob(features_run):
    workdir, _ = features_run
    cv = pd.read_parquet(workdir / "results/mine/summary/cv.parquet")
    selected = cv[(cv["algorithm"] == "fcm") & (cv["k"] == 3)].set_index("n")
    assert list(selected.index) == list(SIZES)
    # Blob 2 holds a third of the samples at 60 % accuracy against 95 %: every size shows it.
    assert (selected["p_holm"] < 0.05).all()
    assert (selected["weakest_metric"] < selected["test_metric"] - 0.1).all()
    export = pd.read_csv(workdir / "results/mine/clusters_per_sample.csv")
    assert len(export) == sum(SIZES)
    # The export carries the target, the loss and the metadata the table gave.
    assert {"target", "loss", "site", "label"} <= set(export.columns)
    # Cluster numbers are per fold (by size): each fold's weakest cluster is blob 2, site B.
    folds = pd.read_parquet(workdir / "results/mine/summary/fold_cv.parquet")
    weakest = folds[(folds["algorithm"] == "fcm") & (folds["k"] == 3) & (folds["n"] == 240)]
    for fold, cluster in weakest[["fold", "weakest_cluster"]].itertuples(index=False):
        members = export[(export["n"] == 240) & (export["fold"] == fold)]
        share_b = members.groupby("cluster")["site"].apply(lambda s: (s == "B").mean())
        assert share_b.idxmax() == cluster and share_b.max() > 0.9
    assert (workdir / "results/tables/mine_cv.csv").exists()
    assert "## mine" in (workdir / "results/summary.md").read_text()


def test_the_weak_cluster_is_profiled_by_its_metadata(features_run):
    workdir, _ = features_run
    profile = pd.read_parquet(workdir / "results/mine/summary/metadata.parquet")
    export = pd.read_csv(workdir / "results/mine/clusters_per_sample.csv")
    at_240 = export[export["n"] == 240]
    # The profile recomputed from the export: site B's share of each cluster number (pooled
    # over folds, where the numbers are each fold's own).
    by_hand = at_240.groupby("cluster")["site"].apply(lambda s: 100 * (s == "B").mean())
    site_b = profile[(profile["n"] == 240) & (profile["level"] == "B")].set_index("cluster")
    numbered = site_b[site_b.index >= 0]
    assert numbered["share"].to_dict() == pytest.approx(by_hand.to_dict())
    overall = 100 * (at_240["site"] == "B").mean()
    assert numbered["overall_share"].iloc[0] == pytest.approx(overall)
    # Each fold's weakest cluster, pooled over folds (cluster −1): blob 2, all site B.
    folds = pd.read_parquet(workdir / "results/mine/summary/fold_cv.parquet")
    folds = folds[(folds["algorithm"] == "fcm") & (folds["k"] == 3) & (folds["n"] == 240)]
    weakest = at_240.merge(
        folds[["fold", "weakest_cluster"]], left_on=["fold", "cluster"],
        right_on=["fold", "weakest_cluster"],
    )  # fmt: skip
    assert site_b.loc[-1, "share"] == pytest.approx(100 * (weakest["site"] == "B").mean())
    assert site_b.loc[-1, "share"] > 90 and site_b.loc[-1, "overall_share"] == pytest.approx(
        overall
    )
    assert site_b.loc[-1, "p_holm"] < 1e-6 and site_b.loc[-1, "effect"] > 0.8
    text = (workdir / "results/summary.md").read_text()
    expected = f"it holds {site_b.loc[-1, 'share']:.0f} % site B against {overall:.0f} % overall"
    assert expected in text
    table = pd.read_csv(workdir / "results/tables/mine_metadata.csv")
    assert {"share %", "overall %", "lift", "p (Holm)"} <= set(table.columns)
    assert (workdir / "results/figures/mine_metadata.png").stat().st_size > 10_000


def test_where_it_hurts_names_the_weak_blob_from_held_out_halves(features_run):
    workdir, _ = features_run
    per_sample = pd.read_csv(workdir / "results/mine/slices_per_sample.csv")
    assert list(per_sample.columns) == PER_SAMPLE_COLUMNS
    assert len(per_sample) == sum(SIZES) * 9  # every held-out sample, once per method
    halves = per_sample.groupby(["n", "fold", "method"])["half"].agg(lambda h: h.mean())
    assert halves.between(0.4, 0.6).all()
    slices = pd.read_parquet(workdir / "results/mine/summary/slices.parquet")
    worst = slices.query("n == 240 and slice == 0").set_index("method")
    # Site B's blob (a third of the samples) is right 60 % of the time against 95 %: found on
    # one half, confirmed on the other. The paper's clustering (k = 3, as the blobs) holds it
    # whole; every error-aware method's worst slice is mostly site B too.
    paper = worst.loc["worst_cluster"]
    assert paper["underperforms"] and paper["excess_p_value"] < 0.001 and paper["gap"] > 0.2
    share = int(paper["profile"].removeprefix("site B ").split(" %")[0])
    assert paper["profile"].startswith("site B ") and share >= 90
    for method in ("domino", "george", "error_predictor"):
        assert worst.loc[method, "gap"] > 0.05 and worst.loc[method, "profile"].startswith("site B")
    # The reported failure is the held-out rows' own.
    features = pd.concat(
        pd.read_parquet(workdir / f"results/mine/n240/fold{fold}/features.parquet")
        for fold in range(3)
    ).set_index("sample_id")
    rows = per_sample.query("method == 'worst_cluster' and n == 240 and slice == 0")
    failure = 1 - features.loc[rows["sample_id"], "correct"].mean()
    assert paper["failure"] == pytest.approx(failure)
    text = (workdir / "results/summary.md").read_text()
    section = text[text.index("### Where it hurts (n = 240, worst_cluster slices)") :]
    assert f"- Slice 0: about {paper['size']:.0f} held-out samples per fold" in section
    assert f"It holds {paper['profile']}." in section
    assert (workdir / "results/figures/mine_slices.png").stat().st_size > 10_000


def test_choosing_auroc_reclusters_and_reports_each_clusters_auroc(features_run):
    # Runs last on this study: it re-runs it with metric.classification: auroc.
    workdir, _ = features_run
    study = features_study(workdir.parent / "embeddings.parquet", algorithms=["fcm"])
    study["metric"] = {"classification": "auroc"}
    config = write_config(workdir / "mine_auroc.yaml", study)
    result = snakemake(workdir, "--configfile", str(config))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = result.stdout + result.stderr
    # The metric is a cluster param: clustering and everything after re-runs, not the import.
    assert "rule cluster:" in log and "rule fold_features:" not in log
    fold = workdir / "results/mine/n240/fold1"
    held_out = pd.read_parquet(fold / "features.parquet").set_index("sample_id")
    size = workdir / "results/mine/n240"  # the cluster tables hold all of n's folds
    stats = pd.read_parquet(size / "cluster_stats_fcm.parquet").query("fold == 1")
    assignments = pd.read_parquet(size / "assignments_fcm.parquet").query("fold == 1")
    for (k, repeat, cluster), members in assignments.groupby(["k", "repeat", "cluster"]):
        rows = held_out.loc[members["sample_id"]]
        by_hand = roc_auc_score(rows["target"] == rows["target"].max(), rows["probability_1"])
        at = (stats["k"] == k) & (stats["repeat"] == repeat) & (stats["cluster"] == cluster)
        assert stats.loc[at, "metric"].item() == pytest.approx(by_hand)
    cv = pd.read_parquet(workdir / "results/mine/summary/cv.parquet")
    selected = cv[(cv["algorithm"] == "fcm") & (cv["k"] == 3)].set_index("n")
    # Blob 2's AUROC is about 0.6 against 0.95: the test still finds it at n = 240 (at 120,
    # clusters of about 13 samples a fold, split in halves for the weakest, are too few).
    assert selected.loc[240, "p_holm"] < 0.05
    assert selected.loc[240, "weakest_metric"] < selected.loc[240, "test_metric"] - 0.1
    assert "test AUROC" in pd.read_csv(workdir / "results/tables/mine_cv.csv").columns
    assert "metric: AUROC" in (workdir / "results/summary.md").read_text()


def test_a_fold_too_small_for_k_stops_before_any_job(tmp_path):
    table = embeddings_table()
    table.to_parquet(tmp_path / "embeddings.parquet", index=False)
    workdir = make_workdir(tmp_path / "study")
    study = features_study(
        tmp_path / "embeddings.parquet", k=[2, 40], selected={"algorithm": "fcm", "k": 2}
    )
    config = write_config(workdir / "mine.yaml", study)
    result = snakemake(workdir, "--configfile", str(config), "--dry-run")
    assert result.returncode != 0
    assert (
        "clustering.k: k=40 is not smaller than the smallest held-out fold of datasets.mine "
        "(40 samples at n=120)" in result.stdout + result.stderr
    )


def test_another_workflow_runs_hetcv_as_a_module(tmp_path):
    """`module hetcv: snakefile: …` + `use rule * from hetcv`, from a folder of its own."""
    from conftest import PROJECT

    embeddings_table().to_parquet(tmp_path / "embeddings.parquet", index=False)
    study = features_study(
        tmp_path / "embeddings.parquet", algorithms=["fcm"], selected={"algorithm": "fcm", "k": 3}
    )
    deployer = tmp_path / "deployer"
    deployer.mkdir()
    write_config(deployer / "study.yaml", study)
    (deployer / "Snakefile").write_text(
        'configfile: "study.yaml"\n\n\n'
        "module hetcv:\n"
        f'    snakefile:\n        "{PROJECT / "workflow" / "Snakefile"}"\n'
        "    config:\n        config\n\n\n"
        "use rule * from hetcv\n"
    )
    result = snakemake(deployer)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    cv = pd.read_parquet(deployer / "results/mine/summary/cv.parquet")
    assert sorted(cv["n"].unique()) == list(SIZES)
    assert "## mine" in (deployer / "results/summary.md").read_text()
