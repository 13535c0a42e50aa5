"""Draw the nested, stratified sample of size n and its folds."""

import json
import logging

from hetcv.errors import one_line_errors
from hetcv.splits import run_split_job

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO)
with one_line_errors():
    run_split_job(
        manifest=snakemake.input.manifest,
        out_split=snakemake.output.split,
        dataset=snakemake.wildcards.dataset,
        n=int(snakemake.wildcards.n),
        **json.loads(snakemake.params.split),
    )
