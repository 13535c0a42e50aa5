#!/usr/bin/env bash
# GPU check: one fold of the paper's shape on a CUDA machine, in under 5 minutes on one H100.
#
# ResNet18, VGG16 (the paper's) and DenseNet121 (CheXNet's, most chest X-ray work's) at 224 px
# on synthetic grey images (2,048 per epoch, the size of a paper fold's training set; batch
# 64, so 32 steps per epoch, about 300 steps per model with the warm-up, the alternating timed
# epochs and the busy-fraction phase), all three built by torchvision and trained with
# torch.optim's fused Adam on both sides. Then the CUDA-only test that an epoch and a feature
# extraction never wait for the GPU (torch.cuda.set_sync_debug_mode). Prints, per model and
# stage (train / feature extraction): images/s of hetcv's code and of a plain PyTorch loop,
# their ratio, hetcv's peak GPU memory and the fraction of time the GPU was busy while hetcv
# ran. Needs only the project's files and a Python with torch, numpy and pandas (the
# project's .venv when present); hetcv is imported from src/, not installed.
#
# Usage: bash benchmarks/gpu_check.sh [output folder, default results/bench]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-results/bench}"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
    if [[ -x .venv/bin/python ]]; then python=.venv/bin/python; else python=python3; fi
fi
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"

"$python" - <<'PY'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit("gpu_check: torch sees no CUDA device; this check needs a GPU")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
PY
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv

mkdir -p "$out"
rm -f "$out/gpu_check.csv"
started=$SECONDS
timeout 280 "$python" benchmarks/train_speed.py \
    --arch resnet18 vgg16 densenet121 --image-size 224 --batch-size 64 --images 2048 --rounds 3 \
    --busy-seconds 8 --threads "$(nproc)" --out "$out/gpu_check.csv"
if "$python" -c "import pytest" 2>/dev/null; then
    "$python" -m pytest -q -p no:cacheprovider --no-header -o addopts="" \
        "tests/unit/test_train.py::test_an_epoch_and_an_extraction_never_wait_for_the_gpu" ||
        echo "gpu_check: the no-synchronisation test FAILED"
fi
echo "gpu_check: done in $((SECONDS - started)) s; figures in $out/gpu_check.csv"
