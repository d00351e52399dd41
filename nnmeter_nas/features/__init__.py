"""nn-Meter-compatible feature vectors per kernel type."""
from .extract import (FEATURE_NAMES, FEATURE_SETS, GENERIC_FEATURE_NAMES, extract_features,
                      feature_names, regressor_name, weight_count)

__all__ = ["FEATURE_NAMES", "FEATURE_SETS", "GENERIC_FEATURE_NAMES", "extract_features",
           "feature_names", "regressor_name", "weight_count"]
