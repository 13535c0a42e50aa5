"""Draw the PCA scatter and the cluster galleries of one dataset."""

import json
import logging

from hetcv.errors import one_line_errors
from hetcv.report import run_pictures_job

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO)
with one_line_errors():
    run_pictures_job(
        export=snakemake.input.export,
        first_folds=list(snakemake.input.first_folds),
        images=snakemake.input.images,
        manifest=snakemake.input.manifest,
        clusters=snakemake.input.clusters,
        out=dict(snakemake.output.items()),
        **json.loads(snakemake.params.pictures),
    )
