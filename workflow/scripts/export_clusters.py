"""Write clusters_per_sample.csv: the selected clustering's consensus label per sample."""

import json
import logging

from hetcv.errors import one_line_errors
from hetcv.export import run_export_job

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO)
with one_line_errors():
    run_export_job(
        assignments=list(snakemake.input.assignments),
        features=list(snakemake.input.features),
        out=snakemake.output.export,
        **json.loads(snakemake.params.export),
    )
