"""Write results/summary.md: the verdict for every dataset."""

from hetcv.jobs import run_from_snakemake
from hetcv.summary_md import run_summary_md_job

run_from_snakemake(snakemake, run_summary_md_job)
