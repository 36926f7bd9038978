"""A folder on a disk that can be filled up: a real tmpfs where this machine lets us mount one (root), else the
same ENOSPC injected where a full disk reports it to a careful writer, at fsync.

    with SmallDisk(folder, megabytes=64) as disk:
        ...            # writes succeed
        disk.fill(leave=n)  # from now on, writing more than n more bytes fails with ENOSPC
        disk.free()    # room again
"""
from __future__ import annotations

import errno
import os
import pathlib
import stat
import subprocess


class SmallDisk:
    def __init__(self, folder: pathlib.Path, megabytes: int = 64) -> None:
        self.folder = pathlib.Path(folder)
        self.megabytes = megabytes
        self.mounted = False
        self.filler = self.folder / "filler.bin"
        self._budget: int | None = None  # injected mode: bytes that may still be written (None: not full)
        self._real_fsync = os.fsync

    def __enter__(self) -> "SmallDisk":
        self.folder.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.megabytes}m", "tmpfs", str(self.folder)],
                                capture_output=True)
        self.mounted = result.returncode == 0
        if not self.mounted:  # no permission to mount: fail where a full disk reports it (see module docstring)
            os.fsync = self._fsync
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.folder)], check=True)
        else:
            os.fsync = self._real_fsync

    @property
    def kind(self) -> str:
        return "tmpfs" if self.mounted else "injected ENOSPC"

    def fill(self, leave: int = 0) -> None:
        """Take all free space but `leave` bytes."""
        if not self.mounted:
            self._budget = leave
            return
        status = os.statvfs(self.folder)
        free = status.f_bavail * status.f_frsize
        with open(self.filler, "wb") as stream:
            stream.truncate(0)
            chunk = b"\0" * (1 << 20)
            remaining = max(0, free - leave)
            try:
                while remaining > 0:
                    remaining -= stream.write(chunk[:min(len(chunk), remaining)])
                stream.flush()
                os.fsync(stream.fileno())
            except OSError as error:  # tmpfs counts pages: the last one may not fit
                if error.errno != errno.ENOSPC:
                    raise

    def free(self) -> None:
        self._budget = None
        self.filler.unlink(missing_ok=True)

    def _fsync(self, descriptor: int) -> None:
        status = os.fstat(descriptor)
        if self._budget is not None and stat.S_ISREG(status.st_mode) and self._inside(descriptor):
            if status.st_size > self._budget:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self._budget -= status.st_size
        self._real_fsync(descriptor)

    def _inside(self, descriptor: int) -> bool:
        target = os.path.realpath(f"/proc/self/fd/{descriptor}")
        return target.startswith(os.path.realpath(self.folder) + os.sep)
