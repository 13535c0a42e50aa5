"""Compare plain, within-class and error-aware clustering on a dataset's known subgroups."""

import json
import logging

from hetcv.errors import one_line_errors
from hetcv.subgroups import run_variants_job

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO)
with one_line_errors():
    run_variants_job(
        features=list(snakemake.input.features),
        manifest=snakemake.input.manifest,
        out=snakemake.output.variants,
        **json.loads(snakemake.params.variants),
    )
