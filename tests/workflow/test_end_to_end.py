import numpy as np
import pandas as pd
import torch
from conftest import TINY_STUDY

from hetcv.train import FEATURE_COLUMNS


def fold_dirs(workdir, dataset):
    settings = TINY_STUDY["datasets"][dataset]
    for n in settings["sample_sizes"]:
        for fold in range(settings["folds"]):
            yield n, fold, workdir / "results" / dataset / f"n{n}" / f"fold{fold}"


def test_prepare_writes_uint8_images_in_manifest_order(tiny_study):
    images = np.load(tiny_study / "results/udigits/data/images.npy")
    manifest = pd.read_parquet(tiny_study / "results/udigits/data/manifest.parquet")
    assert images.shape == (1667, 32, 32) and images.dtype == np.uint8
    assert list(manifest.columns) == ["sample_id", "target", "subgroup"]
    assert len(manifest) == len(images)


def test_splits_are_nested_and_each_fold_is_held_out_once(tiny_study):
    small = pd.read_parquet(tiny_study / "results/udigits/splits/n200.parquet")
    large = pd.read_parquet(tiny_study / "results/udigits/splits/n400.parquet")
    assert list(small.columns) == ["sample_id", "index", "fold"]
    assert set(small["sample_id"]) < set(large["sample_id"])
    for n, split in ((200, small), (400, large)):
        features = pd.concat(
            pd.read_parquet(d / "features.parquet")
            for m, _, d in fold_dirs(tiny_study, "udigits")
            if m == n
        )
        assert sorted(features["sample_id"]) == sorted(split["sample_id"])


def test_every_fold_writes_model_history_and_features(tiny_study):
    for dataset, metric in (("udigits", "heldout_accuracy"), ("digitvalue", "heldout_rmse")):
        epochs = TINY_STUDY["datasets"][dataset]["train"]["epochs"]
        for _, fold, directory in fold_dirs(tiny_study, dataset):
            history = pd.read_csv(directory / "history.csv")
            assert list(history["epoch"]) == list(range(1, epochs + 1))
            assert history[metric].notna().all()
            checkpoint = torch.load(directory / "model.pt", weights_only=True)
            assert checkpoint["arch"] == "resnet18"
            features = pd.read_parquet(directory / "features.parquet")
            assert list(features.columns[-512:]) == FEATURE_COLUMNS
            assert (features["fold"] == fold).all()
            assert np.isfinite(features[FEATURE_COLUMNS].to_numpy()).all()
            assert features["f000"].dtype == np.float32


def test_classification_features_schema_and_accuracy_beats_chance(tiny_study):
    features = pd.concat(
        pd.read_parquet(d / "features.parquet")
        for n, _, d in fold_dirs(tiny_study, "udigits")
        if n == 400
    )
    assert list(features.columns[:7]) == [
        "sample_id",
        "fold",
        "target",
        "prediction",
        "predicted_label",
        "correct",
        "f000",
    ]
    assert features["prediction"].between(0, 1).all()
    assert (features["correct"] == (features["predicted_label"] == features["target"])).all()
    majority = max(features["target"].mean(), 1 - features["target"].mean())
    assert features["correct"].mean() > majority + 0.1


def test_regression_features_carry_squared_errors(tiny_study):
    features = pd.read_parquet(tiny_study / "results/digitvalue/n100/fold0/features.parquet")
    assert list(features.columns[:5]) == ["sample_id", "fold", "target", "prediction", "sq_error"]
    assert np.allclose(features["sq_error"], (features["prediction"] - features["target"]) ** 2)


def test_train_jobs_are_benchmarked(tiny_study):
    tables = list((tiny_study / "benchmarks/train").rglob("*.tsv"))
    assert len(tables) == 4 + 2
    assert all(pd.read_csv(t, sep="\t")["s"].iloc[0] > 0 for t in tables)
