"""Writes that leave either the old file or the whole new one, never half of one.

Long runs (feature and boundary caches, checkpoints) write through these, so a full disk, a
read-only folder or a kill in the middle leaves nothing a rerun could mistake for finished work:
the new content goes to a hidden partial file beside the target, renamed over it once complete
(a rename within a folder is atomic), and removed when writing it fails.
"""
from __future__ import annotations

import errno
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: OSError numbers that mean "this file cannot be written here": out of space or quota, too
#: big, a read-only filesystem, no permission. The work finished before stays; rerunning resumes.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM})


def partial_path(path: Path) -> Path:
    """The hidden file `path`'s new content is written to first: same folder, same ending (Keras
    checks it: .keras, .weights.h5), and no name a cache listing (chunk_*.npy) would pick up."""
    return path.with_name(f".partial-{os.getpid()}-{path.name}")


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yields the partial path to write `path`'s new content to; when the block ends, renames it
    over `path` if it was written (a block may decide to write nothing). When the block fails,
    removes it; an OSError is raised again naming `path`, with only the system's one-line reason."""
    path = Path(path)
    partial = partial_path(path)
    partial.unlink(missing_ok=True)  # left by an earlier process with this id
    try:
        yield partial
    except OSError as error:
        code = error.errno
        _quiet_failed_h5py_writes()
        partial.unlink(missing_ok=True)
        # the file that failed: a nested replacing()'s own, else this one (not its partial name)
        named = error.filename if error.filename not in (None, str(partial)) else str(path)
        raise OSError(code, os.strerror(code) if code else "cannot write", named) from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if partial.exists():
        partial.replace(path)


def write_text(path: str | Path, text: str) -> None:
    """`path.write_text(text)`, all or nothing."""
    with replacing(path) as partial:
        partial.write_text(text)


def save_array(path: str | Path, array) -> None:
    """`numpy.save(path, array)`, all or nothing (the name is kept as given: no .npy is added)."""
    import numpy as np

    with replacing(path) as partial:
        with partial.open("wb") as handle:
            # through write(): numpy writes to a real file with tofile(), whose failure on a full
            # disk is an OSError without an errno ("4096 requested and 0 written")
            np.save(_Writes(handle), array)


class _Writes:
    """A file object that numpy sees only as something with write()."""

    def __init__(self, handle):
        self.write = handle.write


def _quiet_failed_h5py_writes() -> None:
    """h5py's file objects closed while the disk is full report the failed flush again from their
    destructors, when the error that already said so is dropped: Cython prints the traceback
    through sys.excepthook, then "Exception ignored in ..." through sys.unraisablehook
    (RuntimeError or OSError: ... file write failed ...), several lines after the real error. From the
    first failed write on, those reports are not printed; every other one still is."""

    def failed_write(error) -> bool:
        return isinstance(error, (RuntimeError, OSError)) and "file write failed" in str(error)

    unraisable, excepthook = sys.unraisablehook, sys.excepthook
    if not getattr(unraisable, "quiets_h5py", False):

        def unraisable_hook(report) -> None:
            if not failed_write(report.exc_value):
                unraisable(report)

        unraisable_hook.quiets_h5py = True
        sys.unraisablehook = unraisable_hook
    if not getattr(excepthook, "quiets_h5py", False):

        def except_hook(kind, error, traceback) -> None:
            if not failed_write(error):
                excepthook(kind, error, traceback)

        except_hook.quiets_h5py = True
        sys.excepthook = except_hook
