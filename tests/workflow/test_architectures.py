"""Architectures by name end to end: a DenseNet121 study and a timm study run through the whole
workflow with ImageNet weights from caches the test prepares (never downloaded), with the
training options on; a model, image size or missing weights that cannot work stop the train
jobs with one line naming the key."""

import copy
import importlib.util

import pandas as pd
import pytest
import torch
from conftest import TINY_STUDY, make_workdir, snakemake, write_config
from torchvision import models

from hetcv.columns import feature_columns, feature_names
from hetcv.models import torchvision_weights_file

HAS_TIMM = importlib.util.find_spec("timm") is not None
SMALL = {
    "source": {"kind": "digits", "variant": "udigits"},
    "task": "classification",
    "pretrained": "imagenet",
    "image_size": 32,
    "sample_sizes": [100],
    "folds": 2,
    "train": {"epochs": 2, "batch_size": 16, "lr": 0.001},
}
CLUSTERING = {
    "pca_components": 5,
    "algorithms": ["kmeans"],
    "k": [2, 3],
    "repeats": 2,
    "selected": {"algorithm": "kmeans", "k": 2},
    "null_permutations": 19,
    "bootstrap": 100,
}
OPTIONS = {
    "weight_decay": 0.01,
    "augment": True,
    "class_weights": "balanced",
    "early_stopping": {"patience": 1, "validation_fraction": 0.2},
}


def prepare_caches(root):
    """TORCH_HOME with DenseNet121's DEFAULT weights, HF_HOME with timm's ResNet18's: state
    dicts of freshly built models, saved where the libraries look."""
    torch.manual_seed(0)
    densenet = models.densenet121(weights=None)
    torch_home = root / "torch"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(torch_home))
        path = torchvision_weights_file(models.get_model_weights("densenet121").DEFAULT)
    path.parent.mkdir(parents=True)
    torch.save(densenet.state_dict(), path)
    hf_home = root / "hf"
    if HAS_TIMM:
        import timm
        from safetensors.torch import save_file

        state = {k: v.contiguous() for k, v in timm.create_model("resnet18").state_dict().items()}
        folder = hf_home / "hub" / "models--timm--resnet18.a1_in1k"
        revision = "1" * 40
        (folder / "refs").mkdir(parents=True)
        (folder / "refs" / "main").write_text(revision)
        (folder / "snapshots" / revision).mkdir(parents=True)
        save_file(state, folder / "snapshots" / revision / "model.safetensors")
    return {"TORCH_HOME": str(torch_home), "HF_HOME": str(hf_home)}, densenet


@pytest.fixture(scope="module")
def architectures_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("architectures")
    environment, densenet = prepare_caches(root)
    datasets = {"dense": {**SMALL, "model": "densenet121", "train": {**SMALL["train"], **OPTIONS}}}
    if HAS_TIMM:
        datasets["timmres"] = {**SMALL, "model": "timm:resnet18"}
    study = {"seed": 0, "datasets": datasets, "clustering": CLUSTERING}
    workdir = make_workdir(root / "study")
    config = write_config(workdir / "study.yaml", study)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in environment.items():
            patch.setenv(key, value)
        result = snakemake(workdir, "--configfile", str(config))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return workdir, densenet


def test_a_densenet121_study_runs_end_to_end_with_its_1024_features(architectures_study):
    workdir, _ = architectures_study
    for fold in (0, 1):
        features = pd.read_parquet(workdir / f"results/dense/n100/fold{fold}/features.parquet")
        assert feature_columns(features.columns) == feature_names(1024)
        assert features["f1023"].dtype == "float32" and features["f1023"].notna().all()
    clusters = pd.read_csv(workdir / "results/dense/clusters_per_sample.csv")
    assert len(clusters) == 100 and set(clusters["cluster"]) <= {0, 1}
    assert (workdir / "results/tables/dense_cv.csv").exists()
    assert "dense" in (workdir / "results/summary.md").read_text()


def test_densenet121_training_started_from_the_cached_imagenet_weights(architectures_study):
    workdir, densenet = architectures_study
    log = (workdir / "logs/train/dense/n100/fold0.log").read_text()
    assert "model densenet121" in log
    saved = torch.load(workdir / "results/dense/n100/fold0/model.pt", weights_only=True)
    assert saved["arch"] == "densenet121" and saved["feature_width"] == 1024
    assert "backbone.classifier.weight" not in saved["state_dict"]
    # A trained weight moved away from the cached one, but by far less than a random start.
    trained = saved["state_dict"]["backbone.features.conv0.weight"]
    start = densenet.features.conv0.weight
    assert not torch.equal(trained, start)
    assert (trained - start).norm() < 0.5 * start.norm()


def test_history_records_the_training_options_that_were_used(architectures_study):
    workdir, _ = architectures_study
    history = pd.read_csv(workdir / "results/dense/n100/fold0/history.csv")
    row = history.iloc[0]
    assert row["optimizer"] == "AdamW" and row["weight_decay"] == 0.01
    assert row["augment"].startswith("brightness 0.1, contrast 0.1, crop 0.9, flip horizontal")
    assert row["class_weights"].startswith("balanced (")
    assert row["early_stopping"] == "patience 1, validation_fraction 0.2"
    assert row["train_samples"] + row["validation_samples"] == 50
    assert history["validation_loss"].notna().all() and history["kept"].sum() == 1


@pytest.mark.skipif(not HAS_TIMM, reason="the optional timm extra is not installed")
def test_a_timm_study_runs_end_to_end_from_the_hugging_face_cache(architectures_study):
    workdir, _ = architectures_study
    features = pd.read_parquet(workdir / "results/timmres/n100/fold1/features.parquet")
    assert feature_columns(features.columns) == feature_names(512)
    history = pd.read_csv(workdir / "results/timmres/n100/fold1/history.csv")
    assert (history["optimizer"] == "Adam").all() and (history["augment"] == "none").all()
    assert "validation_loss" not in history
    assert (workdir / "results/tables/timmres_cv.csv").exists()


BAD = {
    "unknown": (
        {"model": "resnet500", "pretrained": "none"},
        "hetcv error: datasets.unknown.model: 'resnet500' is not a torchvision classification",
    ),
    "toosmall": (
        {"model": "vit_b_16", "pretrained": "none"},
        "hetcv error: datasets.toosmall.image_size: vit_b_16 cannot take 32 x 32 images "
        "(it takes 224 px only",
    ),
    "noweights": (
        {"model": "efficientnet_b0", "pretrained": "imagenet"},
        "hetcv error: datasets.noweights.pretrained: imagenet: torchvision's "
        "EfficientNet_B0_Weights.IMAGENET1K_V1 weights are not in its cache: expected "
        "efficientnet_b0_rwightman-7f5810bc.pth in {home}/hub/checkpoints",
    ),
}


def test_a_model_that_cannot_train_stops_its_jobs_with_one_line_naming_the_key(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    study = copy.deepcopy(TINY_STUDY)
    small = {**SMALL, "sample_sizes": [40], "train": {"epochs": 1, "batch_size": 8}}
    study["datasets"] = {name: {**small, **change} for name, (change, _) in BAD.items()}
    study["clustering"] = CLUSTERING
    workdir = make_workdir(tmp_path / "study")
    config = write_config(workdir / "bad.yaml", study)
    targets = [f"results/{name}/n40/fold0/features.parquet" for name in BAD]
    result = snakemake(workdir, *targets, "--keep-going", "--configfile", str(config))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    for name, (_, message) in BAD.items():
        assert message.format(home=tmp_path / "empty") in output, output[-4000:]
        assert not (workdir / f"results/{name}/n40/fold0/features.parquet").exists()
    assert not (tmp_path / "empty").exists()  # nothing was downloaded
