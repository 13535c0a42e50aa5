"""Draw the planted-subgroup benchmark's figure."""

from hetcv.jobs import run_from_snakemake
from hetcv.validation_figure import run_validation_figure_job

run_from_snakemake(snakemake, run_validation_figure_job)
