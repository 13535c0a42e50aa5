"""Train one (dataset, n, fold) model and write its held-out features."""

import json
import logging

from hetcv.errors import one_line_errors
from hetcv.train import run_train_job

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO)
with one_line_errors():
    run_train_job(
        images=snakemake.input.images,
        manifest=snakemake.input.manifest,
        split=snakemake.input.split,
        n=int(snakemake.wildcards.n),
        fold=int(snakemake.wildcards.fold),
        out_model=snakemake.output.model,
        out_features=snakemake.output.features,
        out_history=snakemake.output.history,
        threads=snakemake.threads,
        **json.loads(snakemake.params.train),
    )
