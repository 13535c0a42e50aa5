"""Cluster one held-out fold's features with one algorithm, for every k and repeat."""

import json
import logging

from hetcv.analysis import run_cluster_job
from hetcv.errors import one_line_errors

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO)
with one_line_errors():
    run_cluster_job(
        features=snakemake.input.features,
        manifest=snakemake.input.manifest,
        out_assignments=snakemake.output.assignments,
        out_cluster_stats=snakemake.output.cluster_stats,
        out_pairs=snakemake.output.pairs,
        out_runs=snakemake.output.runs,
        n=int(snakemake.wildcards.n),
        fold=int(snakemake.wildcards.fold),
        **json.loads(snakemake.params.cluster),
    )
