"""Draw the heat map of subgroup share per cluster of one dataset."""

import json
import logging

from hetcv.errors import one_line_errors
from hetcv.report import run_subgroups_job

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO)
with one_line_errors():
    run_subgroups_job(
        export=snakemake.input.export,
        manifest=snakemake.input.manifest,
        out=dict(snakemake.output.items()),
        **json.loads(snakemake.params.figures),
    )
