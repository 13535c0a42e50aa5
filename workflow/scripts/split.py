"""Draw the nested, stratified sample of size n and its folds."""

from hetcv.jobs import run_from_snakemake
from hetcv.split import run_split_job

run_from_snakemake(snakemake, run_split_job)
