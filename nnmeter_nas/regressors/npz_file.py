"""Reading a kernel regressor's ``.npz`` file safely: one home for the checks every regressor
kind needs (no unpickling, the arrays it must hold, an inflation cap checked before anything is
decompressed), with errors that name the file and say what to do."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import RegressorFileError

# A regressor file whose arrays inflate past these is refused before they are read: real
# forests compress 2-10x, all-zero bombs about 1000x.
_MAX_INFLATED_BYTES = 4 << 30
_MAX_RATIO = 100
_RATIO_FLOOR_BYTES = 64 << 20


def read_regressor_npz(path_or_bytes: str | Path | bytes, keys: Sequence[str], kind: str,
                       saver: str) -> tuple[str, str, Any, dict[str, np.ndarray]]:
    """``(label, redo, header, arrays)`` of a regressor file of ``kind`` holding ``keys``.

    ``label`` prefixes error messages (the path; empty for bytes, whose package loader names
    the package and member), ``redo`` says what to do; ``header`` is the decoded JSON header
    (not yet checked), ``arrays`` maps each of ``keys`` to its array. Raises
    :class:`~nnmeter_nas.errors.RegressorFileError` for anything else.
    """
    is_bytes = isinstance(path_or_bytes, (bytes, bytearray))
    # Bytes come from a package, whose loader prefixes the package and member names.
    label = "" if is_bytes else f"{path_or_bytes}: "
    src = io.BytesIO(bytes(path_or_bytes)) if is_bytes else path_or_bytes
    redo = (f"; it must be a kernel regressor nnmeter_nas wrote ({saver} or a "
            "predictor package): rebuild or reinstall the package it came from")
    try:
        z = np.load(src, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise RegressorFileError(f"{label}not a {kind} file (a single array, not an .npz "
                                     f"archive){redo}")
        with z:
            missing = [k for k in ("header", *keys) if k not in z.files]
            if missing:
                raise RegressorFileError(f"{label}not a {kind} file (no "
                                         f"{', '.join(missing)} array){redo}")
            declared = sum(i.file_size for i in z.zip.infolist())
            packed = sum(i.compress_size for i in z.zip.infolist())
            if declared > _MAX_INFLATED_BYTES or \
                    (declared > _RATIO_FLOOR_BYTES and declared > _MAX_RATIO * packed):
                raise RegressorFileError(f"{label}its arrays would inflate to {declared} "
                                         f"bytes from {packed}; refusing it{redo}")
            header = json.loads(bytes(z["header"]).decode())
            arrays = {k: z[k] for k in keys}
    except RegressorFileError:
        raise
    except FileNotFoundError:
        raise RegressorFileError(f"{label}no such kernel regressor file; check the "
                                 "path") from None
    except (OSError, ValueError, UnicodeDecodeError, EOFError) as exc:
        # numpy's own text suggests allow_pickle=True, which a package must never need.
        what = ("not an .npz archive: numpy could read it only by unpickling, which "
                "nnmeter_nas never does") if "pickle" in str(exc) else \
            f"cannot be read: {type(exc).__name__}: {exc}"
        raise RegressorFileError(f"{label}not a {kind} file ({what}){redo}") from None
    return label, redo, header, arrays
