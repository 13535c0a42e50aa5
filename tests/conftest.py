"""Shared fixtures: a working directory that sees the project, and a tiny study run once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[1]
PROJECT_ENTRIES = ("workflow", "config", "profiles", "src")

TINY_STUDY = {
    "seed": 0,
    "datasets": {
        "udigits": {
            "source": {"kind": "digits", "variant": "udigits"},
            "task": "classification",
            "model": "resnet18",
            "pretrained": "none",
            "image_size": 32,
            "sample_sizes": [200, 400],
            "folds": 2,
            "train": {"epochs": 3, "batch_size": 16, "lr": 0.001},
        },
        "digitvalue": {
            "source": {"kind": "digits", "variant": "digitvalue"},
            "task": "regression",
            "model": "resnet18",
            "pretrained": "none",
            "image_size": 32,
            "sample_sizes": [100],
            "folds": 2,
            "train": {"epochs": 1, "batch_size": 16, "lr": 0.001},
        },
    },
    "clustering": {
        "pca_components": 10,
        "algorithms": ["kmeans", "fcm", "gmm"],
        "k": [2, 3, 4],
        "repeats": 3,
        "fcm": {"m": 2.0, "error": 1.0e-5, "maxiter": 300},
        "selected": {"algorithm": "fcm", "k": 3},
        "null_permutations": 99,
        "bootstrap": 200,
        "within": "all",
        "error_aware": False,
    },
    "metric": {"nrmse_normalizer": "range"},
}


def make_workdir(path: Path) -> Path:
    """A working directory whose Snakefile, workflow, config … are the project's own."""
    path.mkdir(parents=True, exist_ok=True)
    for entry in PROJECT_ENTRIES:
        (path / entry).symlink_to(PROJECT / entry)
    return path


def write_config(path: Path, study: dict) -> Path:
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def snakemake(workdir: Path, *args: str, timeout: int = 1200) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory) -> Path:
    """The tiny study, run once through the whole workflow; returns its working directory."""
    workdir = make_workdir(tmp_path_factory.mktemp("tiny_study"))
    config = write_config(workdir / "tiny.yaml", TINY_STUDY)
    result = snakemake(workdir, "--configfile", str(config))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return workdir


def job_counts(output: str) -> dict[str, int]:
    """The "Job stats" table of a (dry-)run as ``{rule: count}`` without the total; empty when
    there is nothing to do."""
    counts: dict[str, int] = {}
    lines = output.splitlines()
    if "Job stats:" not in lines:
        return counts
    for line in lines[lines.index("Job stats:") + 3 :]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        if parts[0] != "total":
            counts[parts[0]] = int(parts[1])
    return counts
