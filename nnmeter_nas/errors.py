"""Exceptions raised by nnmeter_nas. Every message names the thing at fault and what to do.

This is the one home of the package's exceptions and warnings: every public error derives from
:class:`NnMeterNasError` (and from the built-in exception a caller would naturally catch, such as
``ValueError``), every warning from :class:`NnMeterNasWarning` (a ``UserWarning``). Modules
that used to define an error or warning re-export it from here, so
``from nnmeter_nas.parallel.store import ResumeError`` and
``from nnmeter_nas.predictor import LatencyWarning`` keep working.
"""
from __future__ import annotations


class NnMeterNasError(Exception):
    """Base class of all errors raised by nnmeter_nas."""


class ModelFormatError(NnMeterNasError, ValueError):
    """A model file or object could not be read (corrupt, truncated, not ONNX, bad IR)."""


class DynamicShapeError(NnMeterNasError, ValueError):
    """The model has dynamic or unknown tensor shapes and no ``input_shape`` was given."""


class UnsupportedOpError(NnMeterNasError, ValueError):
    """The graph holds an operator the engine does not understand. ``op`` is its ONNX type and
    ``node`` the node's name (``""`` where unknown)."""

    def __init__(self, message: str, *, op: str = "", node: str = "") -> None:
        super().__init__(message)
        self.op = op
        self.node = node


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


# ---------------------------------------------------------------------------------------------
# Errors of the builder and NNI-facing layers (each was defined in its own module; those
# modules re-export them from here).

class UsageError(NnMeterNasError):
    """Arguments that parse but do not make sense together (the CLI exits with status 2)."""


class UnsafePickleError(PackageError):
    """A pickle asked for a class or function outside the allow-list; nothing was executed."""


class HostMismatchError(NnMeterNasError, ValueError):
    """This host is not the device a predictor was built on (other CPU, instruction set,
    library version or threads): what it measures would calibrate another device."""


class BuildConfigError(UsageError, ValueError):
    """A predictor build or calibration setting that cannot work (a count below its minimum,
    an unknown kernel spec, a predictor name that is not a plain folder name, a work folder
    that is a file): refused before anything is measured, naming the setting."""


class CalibrationError(NnMeterNasError, ValueError):
    """A per-space calibration cannot be fitted from the networks given (fewer networks than
    parameters, no kernel the predictor has a regressor for, latencies that are not positive)."""


class StoreMismatchError(NnMeterNasError, ValueError):
    """The store was measured with other backend settings than the ones resuming it."""


class KernelMismatchError(NnMeterNasError, ValueError):
    """The engine did not find the kernel a spec's module was built to contain."""


class UnsupportedSpaceError(NnMeterNasError, ValueError):
    """The model space holds a mutable the latency table cannot enumerate, or the space does not
    run on the given input shape."""


class SampleError(NnMeterNasError, ValueError):
    """A sample misses a label of the space, has an unknown label, or an unknown value (also
    raised for integer codes of samples: ``parallel.codes``, formerly ``SampleCodeError``)."""


class TableMismatchError(NnMeterNasError, ValueError):
    """A latency table was built for another space, input shape or device."""


class DeviceListError(NnMeterNasError, ValueError):
    """A list of devices to predict on is empty or names a device twice."""


class SpaceSpecError(UsageError, ValueError):
    """A search-space name that cannot be resolved, or a space without a known input shape."""


class InfeasibleBudgetError(NnMeterNasError, ValueError):
    """No architecture the strategy could find meets the latency budgets."""


class LatencySourceError(NnMeterNasError, KeyError):
    """The latency source returned no (or no usable) latency for a device that is needed."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ScoringError(NnMeterNasError, RuntimeError):
    """Scoring could not finish (a chunk failed on every attempt, Ray is missing...)."""


class ResumeError(NnMeterNasError, ValueError):
    """``out`` holds results of a different job (or a file we did not write)."""

# ---------------------------------------------------------------------------------------------


class MissingRegressorError(NnMeterNasError, KeyError):
    """The predictor has no regressor for some kernel types: ``strict=True``, or a latency table
    (where such a kernel would make its choice look free) built without ``allow_missing=True``."""

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


class MeasurementDataError(NnMeterNasError, ValueError):
    """Measured networks given for fitting are unusable (missing file, bad latency, a network
    that fails to load); the message names the file and row."""


class NnMeterNasWarning(UserWarning):
    """Base class of the warnings nnmeter_nas issues."""


class ConvergenceWarning(NnMeterNasWarning):
    """An iterative fit stopped at its round limit while its parameters were still moving."""


class LatencyWarning(NnMeterNasWarning):
    """A prediction is less trustworthy than usual (missing regressor, out-of-domain kernel)."""


class TorchFallbackWarning(NnMeterNasWarning):
    """A torch module went through the ONNX export because the torch front end cannot read
    it (the message names the submodule and op)."""


class PackageWarning(NnMeterNasWarning):
    """An installed predictor package is skipped (its manifest cannot be read), so its name
    loads another package."""


class UnknownKernelWarning(NnMeterNasWarning):
    """An imported nn-Meter release holds a regressor (``<kernel>.pkl``) for a kernel type
    nnmeter_nas never predicts with it (a misnamed or foreign file), so it would go unused."""
