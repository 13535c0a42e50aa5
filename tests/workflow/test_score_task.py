"""A segmentation team's per-case Dice with its encoder's embedding (``task: score``), through
the whole workflow: from a table, and from an nnU-Net ``summary.json`` joined to the table."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import make_workdir, snakemake, write_config

WIDTH = 16
SIZES = (150, 300)


def dice_cases(seed=0, low_blob=True):
    """Three well-separated blobs of cases; per-case Dice ~ Beta around 0.85, 0.6 in blob 2."""
    rng = np.random.default_rng(seed)
    total = max(SIZES)
    blob = rng.integers(0, 3, total)
    embedding = rng.normal(scale=4.0, size=(3, WIDTH))[blob] + rng.normal(size=(total, WIDTH))
    mean = np.where((blob == 2) & low_blob, 0.6, 0.85)
    dice = rng.beta(20 * mean, 20 * (1 - mean))
    frames = []
    for n in SIZES:
        frame = pd.DataFrame(
            {
                "sample_id": [f"case_{i:03d}" for i in range(n)],
                "n": n,
                "fold": rng.permutation(np.arange(n) % 3),
                "dice": dice[:n],
                "scanner": np.where(blob[:n] == 2, "B", "A"),
            }
        )
        columns = {f"emb_{j}": embedding[:n, j] for j in range(WIDTH)}
        frames.append(pd.concat([frame, pd.DataFrame(columns)], axis=1))
    return pd.concat(frames, ignore_index=True)


def score_study(source):
    return {
        "datasets": {"seg": {"source": source, "task": "score"}},
        "clustering": {
            "algorithms": ["kmeans"],
            "k": [3],
            "repeats": 2,
            "null_permutations": 99,
            "bootstrap": 200,
            "selected": {"algorithm": "kmeans", "k": 3},
        },
        "slices": {"method": "worst_cluster"},
    }


@pytest.fixture(scope="module")
def score_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("score")
    dice_cases().to_parquet(root / "cases.parquet", index=False)
    workdir = make_workdir(root / "study")
    source = {
        "kind": "features",
        "table": str(root / "cases.parquet"),
        "embedding": "emb_",
        "score_column": "dice",
        "metadata_columns": ["scanner"],
    }
    config = write_config(workdir / "seg.yaml", score_study(source))
    result = snakemake(workdir, "--configfile", str(config))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workdir


def test_a_score_study_finds_the_low_dice_blob(score_run):
    cv = pd.read_parquet(score_run / "results/seg/summary/cv.parquet")
    chosen = cv[cv["role"] == "selected"].set_index("n")
    assert list(chosen.index) == list(SIZES)
    assert (chosen["p_holm"] < 0.05).all()
    # The weakest cluster's mean Dice is below the rest's, its whole interval too.
    assert (chosen["weakest_ci_high"] < chosen["test_metric"]).all()
    assert chosen["p_calibrated"].isna().all()  # no probabilities: no calibrated test
    assert (chosen["debiased_method"] == "normal model").all()
    held_out = pd.read_parquet(score_run / "results/seg/n300/fold0/features.parquet")
    assert {"score", "target", "loss"} <= set(held_out.columns)
    assert held_out["score"].between(0, 1).all()
    # The per-cluster metric is the clusters' mean Dice.
    stats = pd.read_parquet(score_run / "results/seg/n300/cluster_stats_kmeans.parquet")
    assignments = pd.read_parquet(score_run / "results/seg/n300/assignments_kmeans.parquet")
    one = assignments[(assignments["fold"] == 0) & (assignments["repeat"] == 0)]
    joined = one.merge(held_out[["sample_id", "score"]], on="sample_id")
    by_hand = joined.groupby("cluster")["score"].mean()
    rows = stats[(stats["fold"] == 0) & (stats["repeat"] == 0)].set_index("cluster")
    assert rows["metric"].to_dict() == pytest.approx(by_hand.to_dict())
    text = (score_run / "results/summary.md").read_text()
    assert "No confidence-calibrated test" in text and "mean score" in text
    assert "scanner B" in text  # what the weakest cluster holds


def nnunet_summary(cases: pd.DataFrame) -> dict:
    """What nnU-Net v2's evaluation writes: per case, files and metrics per label."""
    return {
        "metric_per_case": [
            {
                "prediction_file": f"/preds/{case}.nii.gz",
                "reference_file": f"/labelsTs/{case}.nii.gz",
                "metrics": {"1": {"Dice": float(dice), "IoU": float(dice / (2 - dice))}},
            }
            for case, dice in zip(cases["sample_id"], cases["dice"], strict=True)
        ],
        "mean": {},
        "foreground_mean": {},
    }


def test_an_nnunet_summary_joined_to_an_embedding_table_runs_as_a_study(tmp_path):
    cases = dice_cases(seed=1)
    largest = cases[cases["n"] == max(SIZES)]
    (tmp_path / "summary.json").write_text(json.dumps(nnunet_summary(largest)))
    embeddings = largest.drop(columns=["dice", "n", "fold"])
    embeddings.to_parquet(tmp_path / "encoder.parquet", index=False)
    workdir = make_workdir(tmp_path / "study")
    source = {
        "kind": "features",
        "table": str(tmp_path / "encoder.parquet"),
        "embedding": "emb_",
        "nnunet_summary": str(tmp_path / "summary.json"),
        "nnunet_metric": "Dice",
    }
    study = score_study(source)
    config = write_config(workdir / "nnunet.yaml", study)
    result = snakemake(workdir, "results/seg/summary/cv.parquet", "--configfile", str(config))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    held_out = pd.read_parquet(workdir / "results/seg/n300/fold0/features.parquet")
    expected = largest.set_index("sample_id")["dice"]
    assert held_out.set_index("sample_id")["score"].to_dict() == pytest.approx(
        expected.loc[held_out["sample_id"]].to_dict()
    )
    # A case the summary lacks stops the run with one line naming it.
    short = nnunet_summary(largest.iloc[1:])
    (tmp_path / "summary.json").write_text(json.dumps(short))
    failed = snakemake(workdir, "results/seg/summary/cv.parquet", "--configfile", str(config))
    assert failed.returncode != 0
    log = (workdir / "logs/import_features/seg.log").read_text()
    assert f"case {largest['sample_id'].iloc[0]!r} has no score" in log


def test_a_score_outside_its_range_is_one_line(tmp_path):
    cases = dice_cases(seed=2)
    cases.loc[5, "dice"] = 1.4
    cases.to_parquet(tmp_path / "cases.parquet", index=False)
    workdir = make_workdir(tmp_path / "study")
    source = {
        "kind": "features",
        "table": str(tmp_path / "cases.parquet"),
        "embedding": "emb_",
        "score_column": "dice",
    }
    config = write_config(workdir / "bad.yaml", score_study(source))
    result = snakemake(workdir, "--configfile", str(config))
    assert result.returncode != 0
    log = (workdir / "logs/import_features/seg.log").read_text()
    assert "row 5: score 1.4 is not a number within source.score_range [0, 1]" in log
