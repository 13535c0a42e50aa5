"""hetcv: does dataset heterogeneity hurt your CNN, and where?

The library behind the Snakemake workflow: data sources, nested stratified splits, CNN
training and feature extraction, cluster analysis and its statistics, tables and figures.
Modules hold one idea each; file I/O stays at the edges (``io`` and the ``run_*`` functions
the workflow scripts call).
"""

__version__ = "0.1.0"
