import subprocess
import sys
from pathlib import Path

import pytest


def imported(module: str, other: str) -> bool:
    """Whether importing ``module`` in a fresh interpreter also imports ``other``."""
    code = f"import sys, {module}; print({other!r} in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip() == "True"


# Every rule's module but train's (workflow/scripts: one per rule), and the Snakefile's.
JOB_MODULES = sorted(
    f"hetcv.{script.stem}"
    for script in (Path(__file__).parents[2] / "workflow" / "scripts").glob("*.py")
    if script.stem != "train"
)


@pytest.mark.parametrize("module", [*JOB_MODULES, "hetcv.study", "hetcv.params", "hetcv.paths"])
def test_rules_that_do_not_train_never_import_torch(module):
    assert not imported(module, "torch")


def test_training_uses_torchvision_and_imports_timm_only_for_a_timm_model():
    """The architectures and weights are torchvision's own (no copies in hetcv); timm, an
    optional extra, is imported by the jobs that train a ``timm:`` model only."""
    assert imported("hetcv.train", "torchvision")
    assert not imported("hetcv.train", "timm")
