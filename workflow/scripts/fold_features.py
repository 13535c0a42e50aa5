"""Write one (n, fold)'s held-out rows of a features table, as training would."""

from hetcv.fold_features import run_fold_features_job
from hetcv.jobs import run_from_snakemake

run_from_snakemake(snakemake, run_fold_features_job)
