"""The shipped study files plan the jobs they promise (dry runs: nothing is trained)."""

import copy
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from conftest import PROJECT, TINY_STUDY, job_counts, make_workdir, snakemake, write_config


def with_placeholders_replaced(value, root: Path):
    """Point every ``PLACEHOLDER/...`` path of a study file into ``root``."""
    if isinstance(value, dict):
        return {key: with_placeholders_replaced(item, root) for key, item in value.items()}
    if isinstance(value, str) and value.startswith("PLACEHOLDER/"):
        return str(root / value.removeprefix("PLACEHOLDER/"))
    return value


def write_placeholder_data(root: Path) -> None:
    """Tables in the layouts paper.yaml expects (PSP: image,discard; RSNA: id,boneage,male)."""
    (root / "psp_plates" / "images").mkdir(parents=True)
    pd.DataFrame(
        {
            "image": [f"scan{i:04d}.png" for i in range(800)],
            "discard": [i % 3 == 0 for i in range(800)],
        }
    ).astype({"discard": int}).to_csv(root / "psp_plates" / "labels.csv", index=False)
    bone_age = root / "rsna-bone-age"
    (bone_age / "boneage-training-dataset").mkdir(parents=True)
    pd.DataFrame(
        {
            "id": range(1, 2001),
            "boneage": [12 + i % 200 for i in range(2000)],
            "male": [i % 4 == 0 for i in range(2000)],  # 1,500 girls
        }
    ).to_csv(bone_age / "boneage-training-dataset.csv", index=False)


def test_paper_study_plans_32_train_jobs_at_the_papers_sample_sizes(tmp_path):
    study = yaml.safe_load((PROJECT / "config" / "paper.yaml").read_text())
    assert study["datasets"]["psp_plates"]["model"] == "resnet18"
    assert study["datasets"]["bone_age_female"]["model"] == "vgg16"
    assert {d["pretrained"] for d in study["datasets"].values()} == {"imagenet"}
    assert {d["image_size"] for d in study["datasets"].values()} == {224}
    assert study["clustering"]["selected"] == {"algorithm": "fcm", "k": 4}
    assert study["clustering"]["pca_components"] == 10 and study["clustering"]["repeats"] == 10

    data = tmp_path / "data"
    write_placeholder_data(data)
    workdir = make_workdir(tmp_path / "study")
    config = write_config(workdir / "paper.yaml", with_placeholders_replaced(study, data))
    result = snakemake(workdir, "--configfile", str(config), "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    counts = job_counts(result.stdout)
    assert counts["train"] == 32
    assert counts["prepare"] == 2 and counts["summarize"] == 2
    assert counts["cluster"] == 2 * 4  # one job per (dataset, n): every fold and algorithm
    for folder in ("psp_plates/n100", "psp_plates/n300", "psp_plates/n400", "psp_plates/n800"):
        assert f"results/{folder}/fold3/features.parquet" in result.stdout
    for n in (300, 700, 750, 1500):  # half and all of the 1,500 girls (male == False)
        assert f"results/bone_age_female/n{n}/fold0/features.parquet" in result.stdout


def test_paper_study_names_a_missing_placeholder_table(tmp_path):
    workdir = make_workdir(tmp_path / "study")
    result = snakemake(workdir, "--configfile", str(PROJECT / "config" / "paper.yaml"), "--dry-run")
    assert result.returncode != 0
    message = "datasets.bone_age_female.source.csv: table PLACEHOLDER/rsna-bone-age/"
    assert message in result.stdout + result.stderr


def test_validation_study_plans_the_benchmark(tmp_path):
    workdir = make_workdir(tmp_path / "study")
    config = PROJECT / "config" / "validation.yaml"
    result = snakemake(workdir, "validate", "--configfile", str(config), "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    counts = job_counts(result.stdout)
    # Tuning: 4 mechanisms × 2 seeds; test: 4 strong rungs and 2 nulls × 5 seeds; 2 folds.
    assert counts["train"] == (4 * 2 + 6 * 5) * 2
    assert "cluster" not in counts  # the benchmark's methods run inside the validation job
    assert counts["validation"] == 1 and counts["validation_figure"] == 1
    assert counts["validation_dose_response"] == 1


def test_validate_without_planted_datasets_says_which_config_to_use(tmp_path):
    workdir = make_workdir(tmp_path / "study")
    result = snakemake(workdir, "validate", "--dry-run")
    assert result.returncode != 0
    message = "validate: no dataset has source.variant rare, noisy or balanced"
    assert message in result.stdout + result.stderr


def tiny_validation_study() -> dict:
    """A tuning, a test and a null dataset of config/validation.yaml, small enough for tests."""
    study = yaml.safe_load((PROJECT / "config" / "validation.yaml").read_text())
    study["datasets"] = {
        name: {**study["datasets"][name], "sample_sizes": [300], "folds": 2}
        for name in ("tune_marker97_s1", "marker97_s1", "none_s1")
    }
    for settings in study["datasets"].values():
        settings["train"] = {"epochs": 1, "batch_size": 32, "lr": 0.001}
    study["validation"]["embeddings"] = ["model"]
    return study


def test_validate_tunes_then_writes_the_table_the_summary_and_the_figure(tmp_path):
    workdir = make_workdir(tmp_path / "study")
    config = write_config(workdir / "validation.yaml", tiny_validation_study())
    result = snakemake(workdir, "validate", "--configfile", str(config))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = workdir / "results" / "validation"
    tuning = pd.read_csv(out / "tuning.csv")
    assert set(tuning["dataset"]) == {"tune_marker97_s1"}
    methods = {"domino", "george", "error_predictor", "worst_cluster", "neighbours"}
    assert set(tuning["method"]) == methods
    table = pd.read_csv(out / "table.csv")
    assert set(table["dataset"]) == {"marker97_s1", "none_s1"}
    assert len(table) == 2 * 10  # test datasets × (5 methods + 4 baselines + the ceiling)
    marker = table[table["setting"] == "marker ρ=0.97"].set_index("method")
    assert marker[["auroc", "precision_at_10", "within_auroc"]].notna().all().all()
    # ρ = 0.97: 3 % of the images are bias-conflicting (planted).
    assert 0.01 < marker.loc["domino", "planted_share"] < 0.06
    assert {"gate_gap", "strong", "index_debiased_cv"} <= set(table.columns)
    assert table.loc[table["setting"] == "nothing planted", "auroc"].isna().all()
    summary = (out / "summary.md").read_text()
    assert "Default method (best tuning precision@10)" in summary
    assert (out / "figure.png").stat().st_size > 0
    assert (out / "dose_response.png").stat().st_size > 0


def test_a_dry_run_reads_no_image_of_a_50000_image_npz(tmp_path):
    # 50,000 images of 128 × 128: 819 MB once loaded, a few MB on disk (zeros compress).
    source = tmp_path / "large.npz"
    np.savez_compressed(
        source,
        train_images=np.zeros((50_000, 128, 128), np.uint8),
        train_labels=np.arange(50_000).reshape(-1, 1) % 2,
    )
    study = copy.deepcopy(TINY_STUDY)
    study["datasets"] = {
        "large": {
            **TINY_STUDY["datasets"]["udigits"],
            "source": {"kind": "npz", "path": str(source), "splits": ["train"]},
            "sample_sizes": [1000, "half", "all"],
        }
    }
    workdir = make_workdir(tmp_path / "study")
    config = write_config(workdir / "large.yaml", study)
    # Peak memory of the Snakemake process alone: a fresh parent whose only child it is.
    measure = (
        "import resource, subprocess, sys; "
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "print(done.stdout + done.stderr); "
        "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
        "sys.exit(done.returncode)"
    )
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", measure, sys.executable, "-m", "snakemake", "--cores", "1"]
        + ["--configfile", str(config), "--dry-run"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
    )
    seconds = time.perf_counter() - started
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    peak_mb = int(result.stdout.rsplit("MAXRSS_KB", 1)[1]) / 1024
    print(f"\ndry run of a 50,000-image .npz study: {seconds:.1f} s, peak {peak_mb:.0f} MB")
    assert job_counts(result.stdout)["train"] == 3 * 2
    assert "n25000" in result.stdout and "n50000" in result.stdout
    assert peak_mb < 819 / 2


def test_a_five_line_study_file_dry_runs_with_the_documented_defaults(tmp_path):
    workdir = make_workdir(tmp_path / "mini")
    study = workdir / "mine.yaml"
    study.write_text(
        "datasets:\n"
        "  mine:\n"
        "    source: {kind: digits, variant: udigits}\n"
        "    task: classification\n"
        "    sample_sizes: [100, all]\n"
    )
    result = snakemake(workdir, "--configfile", str(study), "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    counts = job_counts(result.stdout)
    # 2 sizes × 4 folds (default) trained; each size's folds clustered in one job.
    assert counts["train"] == 8 and counts["cluster"] == 2


def test_the_documented_defaults_are_the_schemas():
    from hetcv.config import checked_config

    minimal = {
        "datasets": {
            "mine": {
                "source": {"kind": "digits", "variant": "udigits"},
                "task": "classification",
                "sample_sizes": ["all"],
            }
        }
    }
    filled = checked_config(minimal, PROJECT / "workflow/schemas/config.schema.yaml")
    demo = yaml.safe_load((PROJECT / "config/config.yaml").read_text())
    # The demo study spells out every default; filling the five lines gives the same values.
    assert filled["clustering"] == demo["clustering"]
    assert filled["metric"] == demo["metric"] and filled["report"] == demo["report"]
    assert filled["seed"] == demo["seed"] == 0
    mine, udigits = filled["datasets"]["mine"], demo["datasets"]["udigits"]
    for key in ("model", "pretrained", "image_size", "folds", "train"):
        assert mine[key] == udigits[key], key
