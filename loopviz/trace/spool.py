"""Where worker processes put the data loop's rows (`data=True`): a directory the trace makes, one file per process.

A worker cannot append to the main process's lists: each writes its rows, one batch at a time, to a file of its own,
read back and removed when the trace ends. A file is appended with one `os.write` per batch, so a worker that is
killed loses at most the batch it was making; a cut-short last row is left out when the files are read.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from array import array
from typing import Any

from loopviz.trace.datawork import ND

__all__ = ["Spool"]


class Spool:
    """A directory where worker processes append their rows, one file per process; pickled as its path only."""

    def __init__(self, directory: str | None = None) -> None:
        self.directory = directory or tempfile.mkdtemp(prefix="loopviz-data-")
        self._fd: int | None = None
        self._pid = -1

    def __getstate__(self) -> dict[str, Any]:
        return {"directory": self.directory}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["directory"])

    def write(self, rows: array) -> None:
        """Append rows (a flat int64 array) to this process's file."""
        pid = os.getpid()
        if pid != self._pid:  # a process forked from one that had a file opens its own
            self._fd = os.open(os.path.join(self.directory, f"{pid}.rows"), os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                               0o600)
            self._pid = pid
        os.write(self._fd, rows.tobytes())

    def read(self, most: int) -> tuple[array, int]:
        """Every whole row the workers wrote, up to `most` rows (a cut-short last row is left out): (the rows, how
        many more there were)."""
        rows, more = array("q"), 0
        width = ND * rows.itemsize
        try:
            names = sorted(os.listdir(self.directory))
        except OSError:
            return rows, 0
        for name in names:
            try:
                with open(os.path.join(self.directory, name), "rb") as file:
                    whole = os.fstat(file.fileno()).st_size // width
                    room = max(0, most - len(rows) // ND)
                    rows.frombytes(file.read(min(whole, room) * width))
                    more += max(0, whole - room)
            except OSError:
                continue
        return rows, more

    def remove(self) -> None:
        """Remove the directory and what is in it."""
        shutil.rmtree(self.directory, ignore_errors=True)
