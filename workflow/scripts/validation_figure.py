"""Draw the planted-subgroup benchmark's figure."""

import json
import logging

from hetcv.errors import one_line_errors
from hetcv.report import run_validation_figure_job

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO)
with one_line_errors():
    run_validation_figure_job(
        table=snakemake.input.table,
        out_png=snakemake.output.png,
        out_pdf=snakemake.output.pdf,
        **json.loads(snakemake.params.figure),
    )
