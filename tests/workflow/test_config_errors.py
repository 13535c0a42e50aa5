import copy

import pytest
from conftest import TINY_STUDY, job_counts, make_workdir, snakemake, write_config


def broken_study(change):
    study = copy.deepcopy(TINY_STUDY)
    change(study["datasets"]["udigits"])
    return study


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d.update(epochs=3),
            "config key datasets.udigits: Additional properties are not allowed ('epochs' was",
        ),
        (
            lambda d: d.update(folds="four"),
            "config key datasets.udigits.folds: 'four' is not of type 'integer'",
        ),
        (
            lambda d: d["train"].update(lr=-1),
            "config key datasets.udigits.train.lr: -1 is less than or equal to the minimum of 0",
        ),
        (
            lambda d: d.update(model="resnet 50"),
            "config key datasets.udigits.model: 'resnet 50' does not match",
        ),
        (
            lambda d: d["train"].update(augment={"rotation": 90}),
            "config key datasets.udigits.train.augment.rotation: 90 is greater than the maximum",
        ),
        (
            lambda d: d["train"].update(early_stopping={"validation_fraction": 0.9}),
            "config key datasets.udigits.train.early_stopping.validation_fraction: 0.9 is greater",
        ),
        (
            lambda d: d["train"].update(class_weights="inverse"),
            "config key datasets.udigits.train.class_weights: 'inverse' is not one of",
        ),
        (
            lambda d: d["train"].update(weight_decay=-0.1),
            "config key datasets.udigits.train.weight_decay: -0.1 is less than the minimum of 0",
        ),
        (
            lambda d: d.update(task="regression") or d["train"].update(class_weights="balanced"),
            "datasets.udigits.train.class_weights: balanced weights the classes of a "
            "classification task; this dataset's task is regression",
        ),
        (
            lambda d: d.update(sample_sizes=[100, 5000]),
            "datasets.udigits.sample_sizes: 5000 is larger than the dataset (1667 samples)",
        ),
        (
            lambda d: d.update(pretrained="weights/missing.pth"),
            "datasets.udigits.pretrained: checkpoint file weights/missing.pth does not exist",
        ),
    ],
)
def test_bad_config_stops_before_any_job_with_one_line_naming_the_key(tmp_path, change, message):
    workdir = make_workdir(tmp_path / "study")
    config = write_config(workdir / "bad.yaml", broken_study(change))
    result = snakemake(workdir, "--configfile", str(config), "--dry-run")
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert not (workdir / "results").exists()


def test_a_study_file_replaces_the_demo_study(tmp_path):
    workdir = make_workdir(tmp_path / "study")
    study = copy.deepcopy(TINY_STUDY)
    del study["datasets"]["digitvalue"]
    config = write_config(workdir / "one.yaml", study)
    result = snakemake(workdir, "--configfile", str(config), "--dry-run")
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    assert counts["train"] == 4 and counts["prepare"] == 1 and counts["split"] == 2
    assert "digitvalue" not in result.stdout
