"""Per-kernel latency regressors stored without pickle."""
from .forest import TreeEnsemble

__all__ = ["TreeEnsemble"]
