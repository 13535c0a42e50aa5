import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PROJECT, make_workdir

BIN = Path(sys.executable).parent
PYTHON_TREES = ["src", "tests", "workflow/scripts", "benchmarks"]


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", *PYTHON_TREES],
        ["ruff", "format", "--check", *PYTHON_TREES],
        ["snakefmt", "--check", "Snakefile", "workflow/rules"],
    ],
    ids=["ruff-check", "ruff-format", "snakefmt"],
)
def test_code_is_linted_and_formatted(command):
    result = subprocess.run(
        [str(BIN / command[0]), *command[1:]], cwd=PROJECT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_snakemake_lint_is_clean(tmp_path):
    workdir = make_workdir(tmp_path / "lint")
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint"], cwd=workdir, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


def test_each_path_is_written_once_and_common_smk_stays_small():
    rules = PROJECT / "workflow/rules"
    text = "".join(path.read_text() for path in sorted(rules.glob("*.smk")))
    assert text.count("manifest.parquet") == 1
    assert text.count("features.parquet") == 1
    # 160 lines until the cluster job needed each_algorithm, 165 until it took a sample size's
    # folds (each_fold) and Snakemake's exit needed stop_rescheduling_timers.
    assert len((rules / "common.smk").read_text().splitlines()) <= 185


def test_every_script_is_the_two_line_adapter_and_every_job_has_one_signature():
    import ast
    import importlib
    import inspect

    for script in sorted((PROJECT / "workflow/scripts").glob("*.py")):
        tree = ast.parse(script.read_text())
        *imports, call = tree.body[1:]
        assert all(isinstance(node, ast.ImportFrom) for node in imports), script.name
        assert ast.unparse(call).startswith("run_from_snakemake(snakemake, run_"), script.name
        job_import = next(node for node in imports if node.module != "hetcv.jobs")
        job = getattr(importlib.import_module(job_import.module), job_import.names[0].name)
        assert list(inspect.signature(job).parameters) == ["inputs", "outputs", "params"]


@pytest.mark.parametrize("profile", ["default", "slurm"])
def test_each_profile_bounds_the_schedulers_timers(profile):
    # Snakemake re-runs its scheduler on timers of one rate-limit timespan. The Snakefile's
    # onsuccess and onerror handlers cancel them at the end, but a workflow that uses hetcv as
    # a module runs without those handlers and waits up to one timespan after its last job.
    import humanfriendly
    import yaml

    settings = yaml.safe_load((PROJECT / "profiles" / profile / "config.yaml").read_text())
    _, timespan = settings["max-jobs-per-timespan"].split("/")
    assert humanfriendly.parse_timespan(timespan) <= 10
