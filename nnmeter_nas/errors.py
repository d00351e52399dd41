"""Exceptions raised by nnmeter_nas. Every message names the thing at fault and what to do."""
from __future__ import annotations


class NnMeterNasError(Exception):
    """Base class of all errors raised by nnmeter_nas."""


class ModelFormatError(NnMeterNasError, ValueError):
    """A model file or object could not be read (corrupt, truncated, not ONNX, bad IR)."""


class DynamicShapeError(NnMeterNasError, ValueError):
    """The model has dynamic or unknown tensor shapes and no ``input_shape`` was given."""


class UnsupportedOpError(NnMeterNasError, ValueError):
    """The graph holds an operator the engine does not understand."""


class ExportError(NnMeterNasError, RuntimeError):
    """A torch model could not be exported to ONNX."""


class TorchFrontEndError(NnMeterNasError, ValueError):
    """The torch front end (``torch.fx``) cannot read a module: untraceable control flow, or an
    op or layer it does not map. ``module`` names the submodule at fault; ``load_graph`` falls
    back to the ONNX export for such modules."""

    def __init__(self, message: str, *, module: str = "") -> None:
        super().__init__(message)
        self.module = module


class UnknownPredictorError(NnMeterNasError, LookupError):
    """No predictor of that name (or version) is built in, installed or downloadable."""


class PackageError(NnMeterNasError, ValueError):
    """A predictor package is incomplete, corrupt or unsafe (missing file, bad checksum, zip slip)."""


class DownloadError(NnMeterNasError, OSError):
    """A predictor package could not be downloaded."""


class MissingRegressorError(NnMeterNasError, KeyError):
    """``strict=True`` and the predictor has no regressor for some kernel types."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
