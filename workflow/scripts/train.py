"""Train one (dataset, n, fold) model and write its held-out features."""

from hetcv.jobs import run_from_snakemake
from hetcv.train import run_train_job

run_from_snakemake(snakemake, run_train_job)
