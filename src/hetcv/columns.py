"""Column names shared by the stages (torch-free, so analysis jobs never import torch)."""

FEATURE_DIM = 512
FEATURE_COLUMNS = [f"f{index:03d}" for index in range(FEATURE_DIM)]
