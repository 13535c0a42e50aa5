import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module", ["hetcv.data", "hetcv.splits", "hetcv.analysis", "hetcv.summary"]
)
def test_rules_that_do_not_train_never_import_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
