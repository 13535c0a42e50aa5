"""Draw Figures 2–5 and the cluster-number exploration of one dataset."""

from hetcv.figures import run_figures_job
from hetcv.jobs import run_from_snakemake

run_from_snakemake(snakemake, run_figures_job)
