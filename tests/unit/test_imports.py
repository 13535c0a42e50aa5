import subprocess
import sys

import pytest


def imported(module: str, other: str) -> bool:
    """Whether importing ``module`` in a fresh interpreter also imports ``other``."""
    code = f"import sys, {module}; print({other!r} in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip() == "True"


@pytest.mark.parametrize(
    "module",
    [
        "hetcv.data",
        "hetcv.splits",
        "hetcv.analysis",
        "hetcv.summary",
        "hetcv.validation",
        "hetcv.report",
    ],
)
def test_rules_that_do_not_train_never_import_torch(module):
    assert not imported(module, "torch")


def test_training_does_not_import_torchvision():
    """torchvision's import (it loads torch._dynamo) would add 3.4 s to every train job."""
    assert not imported("hetcv.train", "torchvision")
    assert not imported("hetcv.train", "torch._dynamo")
