"""A killed training job resumes from its checkpoint; a re-run from scratch is byte-identical."""

import copy
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
from conftest import TINY_STUDY, make_workdir, snakemake, write_config

STUDY = copy.deepcopy(TINY_STUDY)
del STUDY["datasets"]["digitvalue"]
# Epochs of about a second: the test polls for the first checkpoint every 50 ms.
STUDY["datasets"]["udigits"].update(
    sample_sizes=[200], train={"epochs": 4, "batch_size": 16, "lr": 0.001}
)
STUDY["clustering"].update(algorithms=["gmm", "fcm"], k=[2, 3], repeats=2)
SIZE = "results/udigits/n200"
FOLD = SIZE + "/fold{fold}"
TARGETS = [f"{SIZE}/assignments_{a}.parquet" for a in ("gmm", "fcm")]
COMPARED = [
    "results/udigits/splits/n200.parquet",
    *[f"{FOLD}/features.parquet".format(fold=f) for f in (0, 1)],
    *[
        f"{SIZE}/{kind}_fcm.parquet"
        for kind in ("assignments", "cluster_stats", "cluster_pairs", "cluster_runs")
    ],
]


def run(workdir, *extra):
    config = write_config(workdir / "study.yaml", STUDY)
    result = snakemake(workdir, *TARGETS, *extra, "--configfile", str(config))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    workdir = make_workdir(tmp_path_factory.mktemp("reference"))
    run(workdir)
    return workdir


def test_a_rerun_from_scratch_is_byte_identical(reference, tmp_path):
    again = make_workdir(tmp_path / "again")
    run(again)
    for path in COMPARED:
        assert (again / path).read_bytes() == (reference / path).read_bytes(), path


def test_a_killed_train_job_resumes_from_its_checkpoint(reference, tmp_path, monkeypatch):
    monkeypatch.setenv("HETCV_CHECKPOINT_SECONDS", "0")  # after every epoch, not every minute
    workdir = make_workdir(tmp_path / "killed")
    config = write_config(workdir / "study.yaml", STUDY)
    checkpoint = workdir / FOLD.format(fold=0) / "checkpoint.pt"
    process = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "--cores", "2", *TARGETS, "--configfile", str(config)],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert checkpoint.exists(), "the train job never wrote a checkpoint"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (workdir / FOLD.format(fold=0) / "features.parquet").exists()
    epochs_done = torch.load(checkpoint, weights_only=False)["epoch"]
    assert 1 <= epochs_done < 4

    unlock = snakemake(workdir, "--configfile", str(config), "--unlock")
    assert unlock.returncode == 0, unlock.stderr
    run(workdir, "--rerun-incomplete")
    log = (workdir / "logs/train/udigits/n200/fold0.log").read_text()
    assert f"after epoch {epochs_done}" in log
    assert not checkpoint.exists()
    for path in COMPARED:
        assert (workdir / path).read_bytes() == (reference / path).read_bytes(), path
    ours = torch.load(workdir / FOLD.format(fold=0) / "model.pt", weights_only=True)
    theirs = torch.load(reference / FOLD.format(fold=0) / "model.pt", weights_only=True)
    for key, value in theirs["state_dict"].items():
        assert torch.equal(ours["state_dict"][key], value), key
    history = pd.read_csv(workdir / FOLD.format(fold=0) / "history.csv")
    assert list(history["epoch"]) == [1, 2, 3, 4]
