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


class UnknownPredictorError(NnMeterNasError, LookupError):
    """No predictor of that name (or version) is built in, installed or downloadable."""


class PackageError(NnMeterNasError, ValueError):
    """A predictor package is incomplete, corrupt or unsafe (missing file, bad checksum, zip slip)."""


class DownloadError(NnMeterNasError, OSError):
    """A predictor package could not be downloaded."""


class UsageError(NnMeterNasError):
    """Arguments that parse but do not make sense together (the CLI exits with status 2)."""


class MissingRegressorError(NnMeterNasError, KeyError):
    """``strict=True`` and the predictor has no regressor for some kernel types."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


# Bad inputs that used to get an answer (issue 16): each is refused naming the input at fault.
class GraphValidationError(ModelFormatError):
    """A shaped graph is inconsistent: a dim that is not a positive int, a tensor whose rank
    its operator cannot take, a reference to a node that does not exist, a malformed
    attribute, or an input that disagrees with the operator's weights."""


class InputTooLargeError(NnMeterNasError, ValueError):
    """An input shape is too large to allocate for tracing a torch model."""


class LatencyBudgetError(NnMeterNasError, ValueError):
    """A latency budget is not a finite positive number of ms, or names a device (or leaves
    out one) that the latencies are not given for."""


class RegressorFileError(NnMeterNasError, ValueError):
    """A kernel regressor file (``.npz``) is not a tree-ensemble file that nnmeter_nas wrote,
    or lacks one of its entries."""


class PackageTooLargeError(PackageError):
    """A package archive member would inflate past the size its manifest or the cap allows."""
