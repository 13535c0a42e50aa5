"""A multi-label image study (three findings per image) trained and analysed per label."""

import numpy as np
import pandas as pd
import pytest
from conftest import make_workdir, snakemake, write_config
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score

LABELS = {
    "big": lambda d: d >= 5,
    "even": lambda d: d % 2 == 0,
    "has loop": lambda d: np.isin(d, [0, 6, 8, 9]),
}
KEYS = ["big", "even", "has_loop"]
N = 240


@pytest.fixture(scope="module")
def multilabel_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("multilabel")
    digits = load_digits()
    images, digit = digits.images[:N], digits.target[:N]
    (root / "png").mkdir()
    for index, pixels in enumerate(images):
        big = np.kron(pixels * 255 / 16, np.ones((4, 4))).astype(np.uint8)
        Image.fromarray(big).save(root / "png" / f"d{index:03d}.png")
    table = pd.DataFrame({"id": [f"d{i:03d}" for i in range(N)]})
    for label, rule in LABELS.items():
        table[label] = rule(digit).astype(int)
    table.to_csv(root / "labels.csv", index=False)
    workdir = make_workdir(root / "study")
    study = {
        "datasets": {
            "digits3": {
                "source": {
                    "kind": "csv",
                    "csv": str(root / "labels.csv"),
                    "images": str(root / "png"),
                    "id_column": "id",
                    "extension": ".png",
                    "target_columns": list(LABELS),
                },
                "task": "multilabel",
                "image_size": 32,
                "sample_sizes": [N],
                "folds": 2,
                "train": {"epochs": 2, "batch_size": 16, "lr": 0.002},
            }
        },
        "clustering": {
            "algorithms": ["kmeans"],
            "k": [3],
            "repeats": 2,
            "null_permutations": 49,
            "bootstrap": 100,
            "selected": {"algorithm": "kmeans", "k": 3},
        },
        "metric": {"classification": "auroc"},
        "slices": {"method": "worst_cluster"},
    }
    config = write_config(workdir / "multilabel.yaml", study)
    result = snakemake(workdir, "--configfile", str(config))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workdir, digit


def test_one_model_writes_every_labels_probability(multilabel_run):
    workdir, digit = multilabel_run
    held_out = pd.read_parquet(workdir / f"results/digits3/n{N}/fold0/features.parquet")
    for key in KEYS:
        assert held_out[f"probability_{key}"].between(0, 1).all()
        assert set(held_out[f"target_{key}"]) == {0, 1}
    index = held_out["sample_id"].str[1:].astype(int).to_numpy()
    assert (held_out["target_big"].to_numpy() == (digit[index] >= 5)).all()
    history = pd.read_csv(workdir / f"results/digits3/n{N}/fold0/history.csv")
    assert "heldout_accuracy" in history and len(history) == 2


def test_each_labels_cluster_auroc_is_scikit_learns(multilabel_run):
    workdir, _ = multilabel_run
    first = None
    for key in KEYS:
        view = f"results/digits3@{key}"
        features = pd.read_parquet(workdir / f"{view}/n{N}/fold0/features.parquet")
        assignments = pd.read_parquet(workdir / f"{view}/n{N}/assignments_kmeans.parquet")
        stats = pd.read_parquet(workdir / f"{view}/n{N}/cluster_stats_kmeans.parquet")
        one = assignments[(assignments["fold"] == 0) & (assignments["repeat"] == 0)]
        joined = one.merge(features, on="sample_id")
        rows = stats[(stats["fold"] == 0) & (stats["repeat"] == 0)].set_index("cluster")
        for cluster, members in joined.groupby("cluster"):
            if members["target"].nunique() == 2:
                expected = roc_auc_score(members["target"], members["probability_1"])
                assert rows.loc[cluster, "metric"] == pytest.approx(expected)
        # Every label is read on the same clusters (the views share the model's seeds).
        labels = one.sort_values("sample_id")["cluster"].to_numpy()
        first = labels if first is None else first
        assert (labels == first).all()


def test_labels_are_reported_side_by_side_and_with_a_macro_mean(multilabel_run):
    workdir, _ = multilabel_run
    labels = pd.read_parquet(workdir / "results/digits3/summary/labels.parquet")
    assert set(labels["label"]) == {*KEYS, "macro"}
    assert labels.loc[labels["label"] != "macro", "p_holm_labels"].between(0, 1).all()
    macro = pd.read_parquet(workdir / "results/digits3@macro/summary/cv.parquet")
    chosen = macro[macro["role"] == "selected"]
    # The macro view's test metric: the mean over labels of each label's accuracy at 0.5.
    features = pd.read_parquet(workdir / f"results/digits3/n{N}/fold0/features.parquet")
    share = np.mean([features[f"correct_{key}"].mean() for key in KEYS])
    runs = pd.read_parquet(workdir / f"results/digits3@macro/n{N}/cluster_runs_kmeans.parquet")
    assert runs.loc[runs["fold"] == 0, "fold_metric"].iloc[0] == pytest.approx(share)
    assert chosen["p_calibrated"].isna().all()
    text = (workdir / "results/summary.md").read_text()
    assert "## digits3: 3 labels" in text
    for key in KEYS:
        assert f"## digits3@{key}" in text
    assert (workdir / f"results/figures/digits3@{KEYS[0]}_fig2.png").exists()
