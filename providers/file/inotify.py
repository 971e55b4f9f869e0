"""Linux inotify on one directory, read through the event loop.

The file provider watches the *directory* holding its files rather than the
files themselves: editors and deploy tools replace a file by renaming a new
one over it, which an inotify watch on the old inode never reports, and a
file that does not exist yet cannot be watched at all.

inotify is reached through ctypes (``inotify_init1``, ``inotify_add_watch``)
so no extension module is needed; ``Inotify`` raises ``OSError`` when the C
library lacks it or the kernel refuses (``ENOSYS``, ``EMFILE`` once
``fs.inotify.max_user_instances`` is used up), and the caller then polls.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import os
import struct
from pathlib import Path

# <sys/inotify.h>
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

# IN_MODIFY is left out on purpose: it fires on every write(), so reacting to
# it would read half-written files. IN_CLOSE_WRITE marks a finished write;
# IN_CREATE and IN_ATTRIB catch symlinks, hard links and permission changes,
# which produce no close.
WATCH_MASK = (
    IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
)
# After one of these the watch no longer follows the directory at its path.
LOST = IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT | IN_IGNORED

_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name


@functools.cache
def _libc() -> ctypes.CDLL | None:
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "inotify_init1"):
        return None
    libc.inotify_init1.argtypes = [ctypes.c_int]
    libc.inotify_init1.restype = ctypes.c_int
    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    libc.inotify_add_watch.restype = ctypes.c_int
    return libc


def _raise_errno(what: str, path: Path) -> None:
    code = ctypes.get_errno()
    raise OSError(code, f"{what}: {os.strerror(code)}", str(path))


class Inotify:
    """Events for the entries of one directory, batched by quiet periods."""

    def __init__(self, directory: Path) -> None:
        libc = _libc()
        if libc is None:
            raise OSError("this C library has no inotify")
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            _raise_errno("inotify_init1", directory)
        if libc.inotify_add_watch(fd, os.fsencode(directory), WATCH_MASK) < 0:
            os.close(fd)
            _raise_errno("inotify_add_watch", directory)
        self.directory = directory
        self.lost = False
        self._fd = fd
        self._names: set[str] = set()
        self._ready = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        while True:
            try:
                data = os.read(self._fd, 64 * 1024)
            except BlockingIOError:
                break
            except OSError:
                self.lost = True
                break
            self._parse(data)
        self._ready.set()

    def _parse(self, data: bytes) -> None:
        offset = 0
        while offset + _EVENT.size <= len(data):
            _wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            start = offset + _EVENT.size
            name = data[start : start + length].rstrip(b"\0")
            offset = start + length
            if mask & LOST:
                self.lost = True
            if name:
                self._names.add(os.fsdecode(name))

    async def batch(self, quiet: float, limit: float) -> set[str]:
        """Names touched, once events have stopped for ``quiet`` seconds.

        Waiting for a quiet period turns an editor's burst (write a temp
        file, rename it over, chmod) into one batch; ``limit`` caps the wait
        so a directory that never goes quiet is still reloaded.
        """
        await self._ready.wait()
        deadline = self._loop.time() + limit
        while not self.lost:
            self._ready.clear()
            remaining = min(quiet, deadline - self._loop.time())
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(self._ready.wait(), remaining)
            except TimeoutError:
                break
        self._ready.clear()
        names, self._names = self._names, set()
        return names

    def close(self) -> None:
        if self._fd < 0:
            return
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._fd = -1
