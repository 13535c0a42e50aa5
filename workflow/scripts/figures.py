"""Draw Figures 2–5 and the cluster-number exploration of one dataset."""

from hetcv.jobs import run_from_snakemake
from hetcv.report import run_figures_job

run_from_snakemake(snakemake, run_figures_job)
