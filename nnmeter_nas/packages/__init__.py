"""Predictor packages: the on-disk format, the registry, downloads and nn-Meter import."""
