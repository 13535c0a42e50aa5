"""Compare plain, within-class and error-aware clustering on a dataset's known subgroups."""

from hetcv.jobs import run_from_snakemake
from hetcv.subgroup_variants import run_subgroup_variants_job

run_from_snakemake(snakemake, run_subgroup_variants_job)
