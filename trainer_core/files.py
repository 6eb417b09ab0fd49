"""Files written whole or not at all.

A checkpoint, a label's image, a report: each is written to a temporary file beside its destination
and moved over it in one step, so a crash or a kill mid-write leaves the previous file (or none), never
half of one, and a reader never sees a file being written.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` (with the same suffix, as numpy and safetensors expect) to write
    to; on leaving the block it replaces `path`, or is removed if the block failed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".partial{path.suffix}")
    os.close(descriptor)
    temporary = Path(name)
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_atomic(path: str | Path, data: bytes | str) -> None:
    """`data` as the whole content of `path`, flushed to disk before it replaces the old file."""
    with atomic_path(path) as temporary, temporary.open("wb") as file:
        file.write(data.encode() if isinstance(data, str) else data)
        file.flush()
        os.fsync(file.fileno())


#: the largest text file read as prompts or labels (a prompts file is a few kilobytes)
MAX_TEXT_FILE = 64 * 2**20


class TextFileError(ValueError):
    """A file that should hold text and does not; the message names the file, never its content."""


def read_text_file(path: str | Path, limit: int = MAX_TEXT_FILE) -> str:
    """The UTF-8 text of `path`, or a TextFileError: `FILE: not UTF-8 text (byte 0xff at offset 1)`,
    `FILE: does not exist`, `FILE: larger than 64 MiB`."""
    path = Path(path)
    if not os.path.isfile(path):  # never raises, even on a name too long for the filesystem
        raise TextFileError(f"{path}: does not exist or is not a file")
    if path.stat().st_size > limit:
        raise TextFileError(f"{path}: larger than {limit // 2**20} MiB; not read")
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise TextFileError(
            f"{path}: not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start})"
        ) from None
