"""Crash-safe file output: atomic replace (files and whole directories), append-only JSONL,
and experiment locks.

Every output that a later stage reads is written with :func:`atomic_write` (write to a
temporary file in the same directory, fsync, ``os.replace``) so that a ``kill -9`` leaves
either the old file or the new one, never a truncated one.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def _read_umask() -> int:
    # os.umask can only be read by setting it; do it once, at import, not per write (threads).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[io.IOBase]:
    """Open a temporary sibling of ``path`` for writing; replace ``path`` on success.

    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    # mkstemp creates 0600 files; outputs should get the usual permissions (0666 & ~umask).
    os.fchmod(fd, 0o666 & ~_UMASK)
    binary = "b" in mode
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_directory(out: str | os.PathLike) -> Iterator[Path]:
    """Build a directory that appears at ``out`` only when complete.

    Yields a fresh temporary directory next to ``out`` (same filesystem); when the block
    finishes it gets the permissions of a normally created directory (``mkdtemp`` makes it
    private) and replaces ``out``: an existing ``out`` is moved aside, the new one renamed
    in, the old one deleted. If the block raises, the temporary directory is removed and
    ``out`` is untouched.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
    """Write ``data`` (text or bytes) to ``path`` atomically."""
    with atomic_open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through a temporary file, so a crash never leaves a truncated checkpoint."""
    import torch

    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


class JsonlAppender:
    """Append-only JSONL writer that flushes and fsyncs each record.

    Used for resumable outputs: a killed run keeps every completed record, and a re-run
    reads the keys already present (:func:`read_jsonl_keys`) and skips them. A torn last
    line (killed mid-write) is ignored by the reader and overwritten-safe because
    :meth:`__init__` truncates a trailing partial line before appending.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _drop_partial_last_line(self.path)
        self._f = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self._f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _drop_partial_last_line(path: Path) -> None:
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        cut = data.rfind(b"\n") + 1
        f.truncate(cut)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read complete JSONL records; a torn final line is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break
            line = line.strip()
            if line:
                out.append(json.loads(line))
    return out


def read_jsonl_keys(path: str | os.PathLike, key: str = "utt_id") -> set[str]:
    return {r[key] for r in read_jsonl(path) if key in r}


def write_lines(path: str | os.PathLike, lines: Iterable[str]) -> None:
    atomic_write(path, "".join(line.rstrip("\n") + "\n" for line in lines))


class LockError(RuntimeError):
    pass


@contextlib.contextmanager
def dir_lock(directory: str | os.PathLike, what: str = "run") -> Iterator[Path]:
    """Hold an exclusive lock file ``DIR/.lock`` for the duration of a run.

    A second run on the same directory fails at once with a message naming the holder.
    The lock is an ``flock`` so it is released when the process dies (``kill -9`` too).
    """
    import fcntl

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lock_path = directory / ".lock"
    f = open(lock_path, "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise LockError(
            f"{directory} is in use by {holder}; wait for it to finish or use another output directory"
        ) from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} ({what})\n")
    f.flush()
    try:
        yield lock_path
    finally:
        f.close()
