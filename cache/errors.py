"""What goes wrong with a summary file: `SummaryError`, one line naming the file; `WriteError`, a file
that could not be written, with what the user can do about it; and the exceptions h5py raises on a
damaged file (the reader turns each into a SummaryError naming the dataset)."""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path


class SummaryError(Exception):
    """A summary that cannot be used (foreign, damaged, too new, unwritable); one-line message."""

    exit_code = 1


# h5py raises these on damaged files (a bad checksum is an OSError, a broken B-tree a KeyError or
# RuntimeError, a bad dataspace a ValueError or TypeError, a shortened dimension an IndexError)
READ_ERRORS = (OSError, KeyError, ValueError, RuntimeError, TypeError, IndexError, AttributeError)

# h5py raises these when writing fails: an OSError from a write, a RuntimeError from a flush or a close
# (HDF5 writes what it cached then, and its message carries the system's errno)
WRITE_ERRORS = (OSError, RuntimeError)

NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (h5py's can span several), or its class name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


class WriteError(SummaryError):
    """`path` could not be written: the system's reason (`errno`, None when it gave none), the room
    left there, and `remedy`, what to do about it."""

    def __init__(self, path: Path, exc: BaseException):
        self.path = Path(path)
        found = re.search(r"errno = (\d+)", str(exc))
        self.errno = getattr(exc, "errno", None) or (int(found.group(1)) if found else None)
        # h5py's message is HDF5's report over several lines, the system's errno inside: its words say why
        reason = os.strerror(self.errno) if self.errno else re.sub(r"^\[Errno \d+\] ", "", first_line(exc))
        try:
            free = f"; {shutil.disk_usage(_existing_parent(self.path)).free / 2**20:,.0f} MiB free there"
        except OSError:
            free = ""
        super().__init__(f"could not write {self.path}: {reason}{free}")

    @property
    def remedy(self) -> str:
        folder = _existing_parent(self.path.parent)
        if self.errno in NO_ROOM:
            return f"make room in {folder}"
        if self.errno in NOT_WRITABLE:
            return f"make {folder} writable"
        return f"make sure {folder} can be written"


def _existing_parent(path: Path) -> Path:
    for parent in (path, *path.parents):
        if parent.exists():
            return parent
    return Path(".")
