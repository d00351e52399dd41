"""Fusion of graph operators into kernels, by a device's fusion rules."""
from .detector import Kernel, detect_kernels
from .fusion_rules import MULTIOP_BLOCKS, FusionRules

__all__ = ["Kernel", "detect_kernels", "FusionRules", "MULTIOP_BLOCKS"]
