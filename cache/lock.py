"""One collection of a summary at a time: `RunLock` holds a lock file next to the summary's partial file.

Two identical collections started together would both write `<name>.partial.h5` and `<name>.h5.tmp`;
HDF5's own file locks then fail the second mid-run ("unable to lock file"), after it has loaded the
model and counted for a while. The run lock is taken before the model loads, with `flock` on
`<name>.lock`, which the system releases when its process ends however it ends (a crash or kill -9
leaves no stale lock); the file holds the holder's pid, for the message the second run gets.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .errors import SummaryError, WriteError


def lock_path(final: Path) -> Path:
    """The lock file of the collection that writes the summary `final`."""
    return final.with_name(final.stem + ".lock")


class RunLock:
    """Held while one process collects the summary `final` (`with RunLock(final): ...`); entering it
    while another process holds it is a SummaryError naming that process."""

    def __init__(self, final: Path):
        self.final = Path(final)
        self.path = lock_path(self.final)
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise WriteError(self.path, exc) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise SummaryError(f"another collection of this summary is running (pid {holder}); it will "
                                   f"write {self.final}") from None
            if _same_file(fd, self.path):
                break
            os.close(fd)  # its holder removed it after we opened it: lock the file that is there now
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)  # while still held: a process that opened it before retries
        os.close(self._fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False
