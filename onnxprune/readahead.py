"""Read the model file while the command line starts.

A CLI start imports onnx (most of it ml_dtypes registering its types with numpy) before it can read
anything; reading a large model takes a comparable time more, and a file read waits on the disk and the
kernel without holding the GIL. So the console script (``onnxprune.launch``) starts that read in a thread
first, and ``files.read_model`` takes the bytes instead of reading the file again, where the file is the
same one (size and modification time as when the read began). Nothing but the standard library here: it
runs before the heavy imports.
"""

from __future__ import annotations

import os
import threading

_MIN_BYTES = 1 << 20  # smaller files read in no time
_MAX_BYTES = 2**31 - 1  # protobuf's limit: bigger models keep their weights in external data anyway
_reads: dict[str, _Read] = {}


class _Read:
    def __init__(self, path: str, stat: os.stat_result) -> None:
        self.stat, self.data = stat, b""
        self.thread = threading.Thread(target=self._read, args=(path,), name="readahead", daemon=True)
        self.thread.start()

    def _read(self, path: str) -> None:
        try:
            with open(path, "rb") as file:
                self.data = file.read()
        except OSError:
            self.data = b""  # files.read_model reads it again and says what is wrong


def start(path: str) -> None:
    """Begin reading ``path`` in a thread where it is a regular file worth it; otherwise nothing."""
    try:
        stat = os.stat(path)
    except (OSError, ValueError):
        return
    if os.path.isfile(path) and _MIN_BYTES <= stat.st_size <= _MAX_BYTES:
        _reads[os.path.realpath(path)] = _Read(path, stat)


def take(path: str | os.PathLike[str]) -> bytes | None:
    """The bytes read ahead for ``path`` (once), or None where none were, or the file changed since."""
    read = _reads.pop(os.path.realpath(path), None)
    if read is None:
        return None
    read.thread.join()
    try:
        now = os.stat(path)
    except OSError:
        return None
    return read.data if _same_file(now, read.stat) and len(read.data) == now.st_size else None


def _same_file(now: os.stat_result, then: os.stat_result) -> bool:
    return (now.st_ino, now.st_size, now.st_mtime_ns) == (then.st_ino, then.st_size, then.st_mtime_ns)
