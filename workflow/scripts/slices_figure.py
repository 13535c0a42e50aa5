"""Draw the top slices: their held-out gaps by method and their images."""

from hetcv.jobs import run_from_snakemake
from hetcv.slices_figure import run_slices_figure_job

run_from_snakemake(snakemake, run_slices_figure_job)
