"""Draw the heat map of subgroup share per cluster of one dataset."""

from hetcv.jobs import run_from_snakemake
from hetcv.subgroup_heatmap import run_subgroup_heatmap_job

run_from_snakemake(snakemake, run_subgroup_heatmap_job)
