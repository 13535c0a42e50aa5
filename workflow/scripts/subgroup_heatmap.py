"""Draw the heat map of subgroup share per cluster of one dataset."""

from hetcv.jobs import run_from_snakemake
from hetcv.report import run_subgroups_job

run_from_snakemake(snakemake, run_subgroups_job)
