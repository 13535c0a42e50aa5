"""The codebase's structure: one step, one name, one module; each path and table named once.

Lint (ruff, snakefmt, snakemake --lint) is CI's own step (`make lint`), not a test.
"""

import ast
import importlib
import inspect
import re

import pytest
from conftest import PROJECT

from hetcv.columns import SUMMARY_TABLES, VERDICT_TABLES
from hetcv.paths import PATHS, summary_tables

RULES = PROJECT / "workflow" / "rules"
SCRIPTS = PROJECT / "workflow" / "scripts"
LIBRARY = PROJECT / "src" / "hetcv"
MODULE_LINES = 600


def rule_scripts() -> dict[str, str]:
    """Rule name → the script it runs, for every rule with a script."""
    found = {}
    for smk in RULES.glob("*.smk"):
        for block in re.split(r"\n(?=rule \w+:)", smk.read_text()):
            name = re.match(r"rule (\w+):", block)
            script = re.search(r'script:\s*\n\s*"([^"]+)"', block)
            if name and script:
                found[name.group(1)] = (smk.parent / script.group(1)).resolve().stem
    return found


def test_each_rule_runs_the_script_and_the_module_named_after_it():
    scripts = rule_scripts()
    assert len(scripts) >= 20
    for rule, script in scripts.items():
        assert script == rule, f"rule {rule} runs scripts/{script}.py"
        tree = ast.parse((SCRIPTS / f"{script}.py").read_text())
        modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert modules == {"hetcv.jobs", f"hetcv.{rule}"}, f"{script}.py imports {modules}"
        assert (LIBRARY / f"{rule}.py").exists(), rule
    assert sorted(path.stem for path in SCRIPTS.glob("*.py")) == sorted(scripts)


def test_every_script_is_the_two_line_adapter_and_every_job_has_one_signature():
    for script in sorted(SCRIPTS.glob("*.py")):
        tree = ast.parse(script.read_text())
        *imports, call = tree.body[1:]
        assert all(isinstance(node, ast.ImportFrom) for node in imports), script.name
        assert ast.unparse(call) == f"run_from_snakemake(snakemake, run_{script.stem}_job)"
        job = getattr(importlib.import_module(f"hetcv.{script.stem}"), f"run_{script.stem}_job")
        assert list(inspect.signature(job).parameters) == ["inputs", "outputs", "params"]


def test_no_library_module_is_longer_than_one_sitting():
    long = {
        path.name: lines
        for path in LIBRARY.glob("*.py")
        if (lines := len(path.read_text().splitlines())) > MODULE_LINES
    }
    assert not long, f"modules over {MODULE_LINES} lines: {long}"


def test_common_smk_holds_paths_and_input_functions_only():
    text = (RULES / "common.smk").read_text()
    assert len(text.splitlines()) <= 120
    assert "sys.path" not in text and "import sys" not in text
    assert "threading" not in text  # the timers: hetcv.jobs.stop_rescheduling_timers


def string_constants(path) -> list[str]:
    """The string literals of a module that are not docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        if id(node) not in docstrings
    ]


def test_each_path_is_written_in_one_place():
    rules = "".join(path.read_text() for path in sorted(RULES.glob("*.smk")))
    assert "results/" not in rules, "rules take their paths from hetcv.paths.PATHS"
    paths = list(PATHS.values())
    assert len(paths) == len(set(paths))
    for module in LIBRARY.glob("*.py"):
        if module.stem != "paths":
            named = [text for text in string_constants(module) if "results/" in text]
            assert not named, f"{module.name} names {named}: take it from hetcv.paths"


def test_no_name_means_two_tables():
    # The per-(n, fold) tables of the cluster rule and the summary tables of summarize have
    # different names; every PATHS key, summary table and verdict table is one thing.
    summary = set(SUMMARY_TABLES) | set(VERDICT_TABLES) | {"labels"}
    assert not summary & set(PATHS), summary & set(PATHS)
    tables = summary_tables(*summary)
    assert len(set(tables.values())) == len(summary)
    assert not set(tables.values()) & set(PATHS.values())
    for rule_file in RULES.glob("*.smk"):
        for key in re.findall(r"^\s+(\w+)=", rule_file.read_text(), re.M):
            if key in PATHS or key in summary:
                continue
            assert not key.startswith(("cluster_", "assignments", "pairs", "runs")), (
                f"{rule_file.name}: {key} reads as a summary table; name the raw table fold_*"
            )


def test_tests_share_helpers_through_modules_not_other_test_files():
    for test in (PROJECT / "tests").rglob("test_*.py"):
        tree = ast.parse(test.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("test_"), f"{test.name} imports {node.module}"


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
