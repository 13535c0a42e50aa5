"""Aggregate one dataset's clusterings over folds and repeats, with their statistics."""

import json
import logging

from hetcv.errors import one_line_errors
from hetcv.summary import run_summarize_job

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO)
with one_line_errors():
    run_summarize_job(
        runs=list(snakemake.input.runs),
        cluster_stats=list(snakemake.input.cluster_stats),
        pairs=list(snakemake.input.pairs),
        selected_assignments=list(snakemake.input.selected_assignments),
        features=list(snakemake.input.features),
        manifest=snakemake.input.manifest,
        out=dict(snakemake.output.items()),
        **json.loads(snakemake.params.summarize),
    )
