"""Names shared by the stages (dependency-free, so no job imports more than it needs)."""

FEATURE_DIM = 512
FEATURE_COLUMNS = [f"f{index:03d}" for index in range(FEATURE_DIM)]
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
)
# The tests' p-values, raw and Holm-adjusted: the permutation test and the calibrated one.
P_VALUE_COLUMNS = ["p_value", "p_holm", "p_calibrated", "p_holm_calibrated"]
