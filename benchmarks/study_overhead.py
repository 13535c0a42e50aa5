"""The whole default study, timed: how much of it is training, and what each stage costs.

Runs what ``make run`` runs (the workflow with ``config/config.yaml``, then the HTML report)
from scratch in ``results/bench/study/`` (a working directory that links the project's
files), then reads Snakemake's per-job benchmark files and each train job's history:

- wall time of the study and of the report;
- the train jobs' own time (their benchmark wall time, summed) and the training itself
  (epochs and held-out evaluation, from ``history.csv``), the difference being process
  start-up, imports, data loading, checkpoints and writing;
- the share of the jobs' time spent outside training epochs: 1 − Σ epoch seconds (held-out
  evaluation included) / Σ every job's wall seconds, reported (its former 30 % target is
  retired: a job's fixed start-up is measured, not engineered away with copies of
  libraries). Measured on job time, not on wall time × cores, so that it does not depend on
  how many threads a job is given;
- per rule: jobs, summed and longest wall time, peak resident memory (``max_rss``);
- the import time of each rule's script module in a fresh interpreter, and whether it
  imports torch.

Writes ``results/bench/study.csv``, ``results/bench/stages.csv`` and
``results/bench/startup.csv``. Usage: ``python benchmarks/study_overhead.py [--cores N]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

PROJECT = Path(__file__).resolve().parents[1]
LINKED = ("workflow", "config", "profiles", "src")
SCRIPT_MODULES = {
    "prepare": "hetcv.prepare",
    "split": "hetcv.split",
    "train": "hetcv.train",
    "cluster": "hetcv.cluster",
    "summarize": "hetcv.summarize",
    "subgroup_variants": "hetcv.subgroup_variants",
    "tables": "hetcv.tables",
    "figures": "hetcv.figures",
    "cluster_pictures": "hetcv.cluster_pictures",
    "export_clusters": "hetcv.export_clusters",
}


def fresh_workdir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    for entry in LINKED:
        (path / entry).symlink_to(PROJECT / entry)
    return path


def run_timed(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"study_overhead: {' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - started


def rule_benchmarks(workdir: Path) -> pd.DataFrame:
    """One row per job: rule, wall seconds, peak RSS (MB), from Snakemake's benchmark files."""
    rows = []
    for path in sorted((workdir / "logs" / "benchmarks").rglob("*.tsv")):
        record = pd.read_csv(path, sep="\t").iloc[-1]
        rule = path.relative_to(workdir / "logs" / "benchmarks").parts[0].removesuffix(".tsv")
        rows.append({"rule": rule, "s": float(record["s"]), "max_rss_mb": float(record["max_rss"])})
    return pd.DataFrame(rows)


def training_seconds(workdir: Path) -> float:
    """Σ over train jobs of their epochs' seconds (training + held-out evaluation)."""
    return sum(
        pd.read_csv(path)["seconds"].sum() for path in (workdir / "results").rglob("history.csv")
    )


def import_seconds(module: str, tries: int = 3) -> tuple[float, bool]:
    """Fastest of ``tries`` fresh-interpreter imports, and whether torch came with it."""
    code = f"import sys, time; t = time.perf_counter(); import {module}; "
    code += "print(time.perf_counter() - t, 'torch' in sys.modules)"
    best, with_torch = float("inf"), False
    for _ in range(tries):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
        best, with_torch = min(best, float(out[0])), out[1] == "True"
    return best, with_torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    parser.add_argument("--out", type=Path, default=PROJECT / "results" / "bench")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    rows = []
    for rules, module in SCRIPT_MODULES.items():
        seconds, with_torch = import_seconds(module)
        rows.append(
            {"rules": rules, "module": module, "import_s": seconds, "imports_torch": with_torch}
        )
    startup = pd.DataFrame(rows)
    startup["import_s"] = startup["import_s"].round(2)
    print("Start-up: import of each rule's module in a fresh interpreter")
    print(startup.to_string(index=False))
    startup.to_csv(args.out / "startup.csv", index=False)

    workdir = fresh_workdir(args.out / "study")
    snakemake = [sys.executable, "-m", "snakemake"]
    study_s = run_timed([*snakemake, "--cores", str(args.cores)], workdir)
    report_s = run_timed([*snakemake, "--cores", "1", "--report", "results/report.html"], workdir)

    jobs = rule_benchmarks(workdir)
    stages = jobs.groupby("rule").agg(
        jobs=("s", "size"),
        sum_s=("s", "sum"),
        max_s=("s", "max"),
        peak_rss_mb=("max_rss_mb", "max"),
    )
    stages = stages.sort_values("sum_s", ascending=False).round(1).reset_index()
    trained = training_seconds(workdir)
    train_jobs = stages.set_index("rule").loc["train"]
    share = 1.0 - trained / float(stages["sum_s"].sum())
    study = pd.DataFrame(
        [
            {
                "cores": args.cores,
                "study_wall_s": round(study_s, 1),
                "report_wall_s": round(report_s, 1),
                "train_jobs": int(train_jobs["jobs"]),
                "train_jobs_s": round(float(train_jobs["sum_s"]), 1),
                "training_s": round(trained, 1),
                "train_job_overhead_s": round(float(train_jobs["sum_s"]) - trained, 1),
                "other_jobs_s": round(
                    float(stages.loc[stages["rule"] != "train", "sum_s"].sum()), 1
                ),
                "outside_training_share": round(share, 3),
            }
        ]
    )
    print("\nPer rule (Snakemake benchmark files):")
    print(stages.to_string(index=False))
    print("\nThe default study:")
    print(study.T.to_string(header=False))
    print(f"share of the jobs' time outside training: {share:.1%}")
    stages.to_csv(args.out / "stages.csv", index=False)
    study.to_csv(args.out / "study.csv", index=False)


if __name__ == "__main__":
    main()
