"""Re-runs touch exactly what a config change affects (dry-runs on the finished tiny study)."""

import copy

import pytest
from conftest import TINY_STUDY, job_counts, snakemake, write_config


def planned_jobs(workdir, tmp_path, change=None):
    study = copy.deepcopy(TINY_STUDY)
    if change:
        change(study)
    config = write_config(tmp_path / "changed.yaml", study)
    result = snakemake(workdir, "--configfile", str(config), "--dry-run")
    assert result.returncode == 0, result.stderr[-3000:]
    return job_counts(result.stdout), result.stdout


def test_unchanged_config_has_nothing_to_do(tiny_study, tmp_path):
    counts, output = planned_jobs(tiny_study, tmp_path)
    assert counts == {}, output[-2000:]


def test_a_clustering_change_never_retrains(tiny_study, tmp_path):
    counts, _ = planned_jobs(tiny_study, tmp_path, lambda s: s["clustering"].update(repeats=4))
    assert "train" not in counts and "split" not in counts and "prepare" not in counts
    assert counts["cluster"] == 2 + 1  # one job per n of both datasets, all its folds
    assert counts["summarize"] == 2


def test_an_fcm_setting_reruns_each_cluster_job_and_never_training(tiny_study, tmp_path):
    counts, _ = planned_jobs(tiny_study, tmp_path, lambda s: s["clustering"]["fcm"].update(m=1.5))
    assert "train" not in counts
    assert counts["cluster"] == 2 + 1  # one job runs every algorithm of a sample size


def test_a_selected_clustering_change_reruns_only_reporting(tiny_study, tmp_path):
    counts, _ = planned_jobs(
        tiny_study, tmp_path, lambda s: s["clustering"]["selected"].update(k=2)
    )
    assert "train" not in counts and "cluster" not in counts
    assert counts["summarize"] == 2 and counts["tables"] == 2


def test_one_datasets_training_change_retrains_only_that_dataset(tiny_study, tmp_path):
    counts, output = planned_jobs(
        tiny_study, tmp_path, lambda s: s["datasets"]["digitvalue"]["train"].update(lr=0.002)
    )
    assert counts["train"] == 2  # digitvalue: one sample size × two folds
    assert "dataset=udigits" not in output
    assert counts["summarize"] == 1


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("weight_decay", 0.01),
        ("augment", True),
        ("class_weights", "balanced"),
        ("early_stopping", {"patience": 2}),
    ],
)
def test_a_training_option_retrains_only_its_dataset(tiny_study, tmp_path, key, value):
    counts, output = planned_jobs(
        tiny_study, tmp_path, lambda s: s["datasets"]["udigits"]["train"].update({key: value})
    )
    assert counts["train"] == 4  # udigits: two sample sizes × two folds
    assert "dataset=digitvalue" not in output
    assert "prepare" not in counts and "split" not in counts


def test_the_options_written_out_at_their_defaults_change_nothing(tiny_study, tmp_path):
    defaults = {"weight_decay": 0, "augment": False, "class_weights": "none"}
    defaults |= {"early_stopping": False}
    counts, output = planned_jobs(
        tiny_study, tmp_path, lambda s: s["datasets"]["udigits"]["train"].update(defaults)
    )
    assert counts == {}, output[-2000:]


def test_a_new_sample_size_trains_only_that_size(tiny_study, tmp_path):
    counts, output = planned_jobs(
        tiny_study,
        tmp_path,
        lambda s: s["datasets"]["udigits"].update(sample_sizes=[200, 300, 400]),
    )
    assert counts["train"] == 2 and counts["split"] == 1
    trained = [line for line in output.splitlines() if "wildcards: dataset=" in line]
    assert all("n=300" in line for line in trained if "fold=" in line)


def test_a_planning_target_reruns_only_planning_and_its_reports(tiny_study, tmp_path):
    counts, _ = planned_jobs(tiny_study, tmp_path, lambda s: s.update(planning={"cv_target": 3}))
    assert set(counts) == {"plan", "tables", "figures", "summary_md", "all"}
    assert counts["plan"] == 2
