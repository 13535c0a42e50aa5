"""Names shared by the stages (dependency-free, so no job imports more than it needs)."""

import re

_FEATURE_NAME = re.compile(r"f\d{3,}")


def feature_names(width: int) -> list[str]:
    """The feature columns of a ``width``-wide embedding: ``f000``, ``f001`` …"""
    return [f"f{index:03d}" for index in range(width)]


def feature_columns(columns) -> list[str]:
    """The feature columns among ``columns`` (a features table's), in their order."""
    return [column for column in columns if _FEATURE_NAME.fullmatch(str(column))]


# The feature columns of the default back models (ResNet18, VGG16: 512-d), for synthetic
# tables in tests and benchmarks. A features table has its model's own width (DenseNet121
# 1024, ResNet50 2048 …): code reads it with feature_columns, never assumes this one.
FEATURE_COLUMNS = feature_names(512)
# The planted benchmark's balanced setting (not "null": CSV readers take it for NaN).
NULL_SETTING = "nothing planted"
# The summarize rule's tables, results/{dataset}/summary/{name}.parquet (config/README.md).
SUMMARY_TABLES = (
    "cv",
    "cluster_stats",
    "cluster_pairs",
    "validity",
    "fold_cv",
    "correlation",
    "subgroups",
    "metadata",
)
# The summary tables that results/summary.md reads, per dataset.
VERDICT_TABLES = (
    "cv",
    "cluster_stats",
    "correlation",
    "subgroups",
    "metadata",
    "planning",
    "slices",
)
# The tests' p-values, raw and Holm-adjusted: the permutation test and the calibrated one.
P_VALUE_COLUMNS = ["p_value", "p_holm", "p_calibrated", "p_holm_calibrated"]
