"""Find where the model fails: every slice method, cross-fitted, on every (n, fold)."""

from hetcv.jobs import run_from_snakemake
from hetcv.slices import run_slices_job

run_from_snakemake(snakemake, run_slices_job)
