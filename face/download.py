"""Downloads that never leave a partial file under the final name.

A weights file that was cut off half way looks like a corrupt model later, far from the
cause. So the bytes go to a temporary file beside the destination, the size is checked,
and only a complete file is renamed into place (os.replace is atomic on one filesystem).
"""
from __future__ import annotations

import http.client
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from .errors import WeightsError
from .paths import file_sha256

CHUNK_SIZE = 1 << 16
TIMEOUT_S = 60.0
USER_AGENT = "howold (python urllib)"


class DownloadError(WeightsError):
    """A download failed: HTTP error, no connection, or the wrong number of bytes arrived."""


def download(url: str, destination: Path, expected_size: int | None = None, progress: bool = True, sha256: str | None = None) -> Path:
    """Fetch `url` to `destination` atomically and return `destination`.

    The size is checked against `expected_size` when given, and against the server's
    Content-Length when it sends one (urllib does not raise when a connection drops early);
    the content against `sha256` (hex) when given: a pinned file from a public index.
    Any failure, including Ctrl-C, removes the temporary file and leaves `destination` as it was.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(
        dir=destination.parent, prefix=f".{destination.name}.", suffix=".part", delete=False
    )
    temporary = Path(handle.name)
    try:
        with handle:
            received = _stream(url, handle, destination.name, expected_size, progress)
            handle.flush()
            os.fsync(handle.fileno())
        if expected_size is not None and received != expected_size:
            problem = "is incomplete" if received < expected_size else "has the wrong size"
            raise DownloadError(f"download of {url} {problem}: got {received:,} bytes, expected {expected_size:,}")
        if sha256 is not None:
            found = file_sha256(temporary)
            if found != sha256.lower():
                raise DownloadError(f"download of {url} has sha256 {found}, expected {sha256.lower()}: not the pinned file")
        os.replace(temporary, destination)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return destination


def _stream(url: str, handle, label: str, expected_size: int | None, progress: bool) -> int:
    """Copy the response body into `handle`; returns the byte count, raises DownloadError."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    received = 0
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            length_header = response.headers.get("Content-Length")
            announced = int(length_header) if length_header and length_header.isdigit() else None
            total = announced if announced is not None else expected_size
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label, disable=not progress) as bar:
                while chunk := response.read(CHUNK_SIZE):
                    handle.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as error:
        raise DownloadError(f"could not download {url}: HTTP {error.code} {error.reason}") from error
    except urllib.error.URLError as error:
        raise DownloadError(f"could not download {url}: {error.reason}") from error
    except (OSError, ValueError, http.client.HTTPException) as error:  # reset, timeout, disk full, bad URL
        raise DownloadError(f"could not download {url}: {error.__class__.__name__}: {error} after {received:,} bytes") from error
    if announced is not None and received != announced:
        raise DownloadError(
            f"download of {url} is incomplete: connection closed after {received:,} of {announced:,} bytes"
        )
    return received
