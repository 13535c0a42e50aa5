"""Conda cannot run here, so check the envs statically: each rule's env file provides every
third-party module its script imports (following imports inside hetcv), and pins it."""

import ast
import re
import sys
from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[2]
# Import name → conda-forge package name.
PACKAGE_OF = {
    "numpy": "numpy",
    "pandas": "pandas",
    "scipy": "scipy",
    "sklearn": "scikit-learn",
    "skfuzzy": "scikit-fuzzy",
    "torch": "pytorch",
    "PIL": "pillow",
    "pyarrow": "pyarrow",
    "matplotlib": "matplotlib-base",
    "seaborn": "seaborn-base",
    "yaml": "pyyaml",
    "jsonschema": "jsonschema",
    "tabulate": "tabulate",
    "jinja2": "jinja2",
    "threadpoolctl": "threadpoolctl",
    "statsmodels": "statsmodels",
}
# Optional backends that pandas loads by name: Parquet I/O, to_markdown, to_latex.
IMPLICIT = {
    "hetcv.io": {"pyarrow"},
    "hetcv.tables": {"tabulate", "jinja2"},
    "hetcv.validation": {"tabulate"},
}


def rules():
    """(rule, env file, script) for every rule with a script."""
    found = []
    for smk in (PROJECT / "workflow/rules").glob("*.smk"):
        for block in re.split(r"\n(?=rule \w+:)", smk.read_text()):
            name = re.match(r"rule (\w+):", block)
            conda = re.search(r'conda:\s*\n\s*"([^"]+)"', block)
            script = re.search(r'script:\s*\n\s*"([^"]+)"', block)
            if name and script:
                assert conda, f"rule {name.group(1)} has no conda env"
                found.append(
                    (
                        name.group(1),
                        (smk.parent / conda.group(1)).resolve(),
                        (smk.parent / script.group(1)).resolve(),
                    )
                )
    return sorted(found)


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
            modules |= {f"{node.module}.{alias.name}" for alias in node.names}
    return modules


def third_party_needs(script: Path) -> set[str]:
    """Conda packages needed by ``script`` and every hetcv module it reaches."""
    needs, seen, queue = set(), set(), [script]
    while queue:
        path = queue.pop()
        for module in imported_modules(path):
            top = module.split(".")[0]
            if top == "hetcv":
                target = PROJECT / "src" / (module.replace(".", "/") + ".py")
                if target.exists() and target not in seen:
                    seen.add(target)
                    queue.append(target)
                    needs |= IMPLICIT.get(module, set())
            elif top not in sys.stdlib_module_names and top != "snakemake":
                needs.add(top)
    return {PACKAGE_OF.get(name, name) for name in needs}


def env_packages(env_file: Path) -> dict[str, str]:
    """Package → pinned version of a conda env file (conda and pip dependencies)."""
    spec = yaml.safe_load(env_file.read_text())
    packages = {}
    for dependency in spec["dependencies"]:
        if isinstance(dependency, dict):
            for requirement in dependency["pip"]:
                name, _, version = requirement.partition("==")
                packages[name] = version
        else:
            name, _, version = dependency.partition("=")
            packages[name] = version
    return packages


@pytest.mark.parametrize(("rule", "env_file", "script"), rules(), ids=lambda v: str(v)[-30:])
def test_each_rules_env_provides_what_its_script_imports(rule, env_file, script):
    provided = env_packages(env_file)
    missing = third_party_needs(script) - set(provided)
    assert not missing, f"rule {rule}: {env_file.name} lacks {sorted(missing)}"


@pytest.mark.parametrize(
    "env_file", sorted((PROJECT / "workflow" / "envs").glob("*.yaml")), ids=str
)
def test_env_files_parse_and_pin_every_package(env_file):
    spec = yaml.safe_load(env_file.read_text())
    assert "conda-forge" in spec["channels"]
    for name, version in env_packages(env_file).items():
        assert re.fullmatch(r"\d+(\.\d+)*", version), f"{env_file.name}: {name} is not pinned"


def test_torch_stays_out_of_the_analysis_and_plot_envs():
    for rule, _, script in rules():
        if rule != "train":
            assert "pytorch" not in third_party_needs(script), rule
