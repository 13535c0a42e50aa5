"""Names shared by the stages (dependency-free, so no job imports more than it needs)."""

FEATURE_DIM = 512
FEATURE_COLUMNS = [f"f{index:03d}" for index in range(FEATURE_DIM)]
# The planted benchmark's balanced setting (not "null": CSV readers take it for NaN).
NULL_SETTING = "nothing planted"
