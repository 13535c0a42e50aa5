#!/usr/bin/env bash
# Install hetcv itself into this env (Snakemake runs this once, after creating the env).
# HETCV_SOURCE: the project's root, set by workflow/rules/common.smk.
set -euo pipefail
python -m pip install --no-deps --editable "$HETCV_SOURCE"
