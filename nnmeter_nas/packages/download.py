"""HTTP(S) download to a file, with a progress bar, written atomically."""
from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import DownloadError

_CHUNK = 1 << 16


def download(url: str, dest: str | Path, *, sha256: str | None = None, timeout: float = 30.0,
             progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` (via ``dest.part``, renamed when complete and verified).

    Fails at once with :class:`DownloadError` when the host cannot be reached, saying how to
    install from a local file instead.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    hint = ("; if this machine is offline, download the file elsewhere and install it with "
            "`nnmeter-nas predictors install PATH.zip` (or set NNMETER_NAS_MIRROR to a "
            "reachable mirror)")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            h = hashlib.sha256()
            bar = None
            if progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                           desc=f"download {dest.name}", leave=False)
            got = 0
            try:
                with open(part, "wb") as f:
                    while True:
                        chunk = resp.read(_CHUNK)
                        if not chunk:
                            break
                        f.write(chunk)
                        h.update(chunk)
                        got += len(chunk)
                        if bar is not None:
                            bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
    except urllib.error.HTTPError as exc:
        part.unlink(missing_ok=True)
        reason = " ".join(str(exc.reason).split())  # a redirect loop's reason spans lines
        raise DownloadError(f"cannot download {url}: HTTP {exc.code} {reason}{hint}") \
            from exc
    except http.client.IncompleteRead as exc:
        part.unlink(missing_ok=True)
        raise DownloadError(f"download of {url} was cut short ({len(exc.partial)} bytes "
                            "in the last read, more expected); try again") from exc
    except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException,
            ValueError) as exc:
        part.unlink(missing_ok=True)
        reason = " ".join(str(getattr(exc, "reason", exc)).split())
        raise DownloadError(f"cannot download {url}: {reason}{hint}") from exc
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    if total is not None and got != total:
        part.unlink(missing_ok=True)
        raise DownloadError(f"download of {url} was cut short ({got} of {total} bytes); "
                            "try again")
    if sha256 is not None and h.hexdigest() != sha256:
        part.unlink(missing_ok=True)
        raise DownloadError(f"download of {url} has sha256 {h.hexdigest()}, expected {sha256}; "
                            "the file is corrupt or was replaced")
    os.replace(part, dest)
    return dest
