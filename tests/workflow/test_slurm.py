"""The tiny study through a real one-node SLURM cluster (tests/slurm/start_slurm.sh).

Needs root and Debian's apt (the script installs slurm 22.05 and munge when missing, and
stop_slurm.sh removes what it installed); skipped otherwise. The cluster has 2 CPUs and one
fake GPU, so the test lowers the profile's train resources to fit it; executor, status command
and retries are the profile's own.
"""

import copy
import os
import shutil
import subprocess
import time

import pandas as pd
import pytest
from conftest import PROJECT, TINY_STUDY, make_workdir, snakemake, write_config

pytestmark = pytest.mark.skipif(
    os.name != "posix" or os.geteuid() != 0 or shutil.which("apt-get") is None,
    reason="a real SLURM cluster needs root and apt-get (Debian) to install and start it",
)
SCRIPTS = PROJECT / "tests" / "slurm"


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    state = tmp_path_factory.mktemp("slurm")
    started = time.perf_counter()
    result = subprocess.run(
        ["bash", SCRIPTS / "start_slurm.sh", state], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    print(f"SLURM cluster up in {time.perf_counter() - started:.1f} s")
    yield state
    subprocess.run(["bash", SCRIPTS / "stop_slurm.sh", state], timeout=60)


def test_tiny_study_runs_through_slurm_with_gpu_requests(slurm_cluster, tmp_path):
    study = copy.deepcopy(TINY_STUDY)
    del study["datasets"]["digitvalue"]
    study["datasets"]["udigits"].update(
        sample_sizes=[200], train={"epochs": 1, "batch_size": 32, "lr": 0.001}
    )
    study["clustering"].update(algorithms=["fcm"], k=[2, 3], repeats=2)
    workdir = make_workdir(tmp_path / "study")
    config = write_config(workdir / "slurm.yaml", study)
    started = time.perf_counter()
    result = snakemake(
        workdir,
        "--configfile",
        str(config),
        "--workflow-profile",
        "profiles/slurm",
        "--jobs",
        "4",
        "--slurm-keep-successful-logs",
        "--slurm-no-account",
        "--slurm-init-seconds-before-status-checks",
        "5",
        "--default-resources",
        "slurm_partition=main",
        "mem_mb=1000",
        "runtime=30",
        "cpus_per_task=1",
        "--set-threads",
        "train=2",
        "--set-resources",
        "train:gpu=1",
        "train:cpus_per_task=2",
        "train:mem_mb=3000",
        timeout=900,
    )
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    print(f"tiny study through SLURM: {elapsed:.0f} s")
    cv = pd.read_parquet(workdir / "results/udigits/summary/cv.parquet")
    assert set(cv["n"]) == {200} and cv["cv"].notna().all()
    assert (workdir / "results/summary.md").exists()
    train_logs = sorted((workdir / "logs/train/udigits/n200").glob("fold*.log"))
    assert len(train_logs) == 2
    for log in train_logs:
        # SLURM exposes the allocated (fake) GPU to the job: proof of the --gpus request.
        assert "CUDA_VISIBLE_DEVICES=0" in log.read_text()
    slurm_logs = list((workdir / ".snakemake/slurm_logs").rglob("*.log"))
    assert any("rule_train" in str(path) for path in slurm_logs)
    cluster_logs = [p for p in (workdir / "logs/cluster").rglob("*.log")]
    assert len(cluster_logs) == 1  # one cluster job clusters both folds of n = 200
