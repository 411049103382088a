"""Files that are never left half written.

Every package writes its outputs (configs, model files, checkpoints, label
volumes, edit histories) through these helpers: data goes to a hidden temporary
file next to the target, is flushed to disk, and only then replaces the target
with :func:`os.replace`, which is atomic on POSIX and Windows. A crash or a
``kill -9`` leaves either the old file or the new one, plus at most a
temporary file that :func:`remove_stale_temporaries` can clear.

Examples
--------
>>> import tempfile, pathlib
>>> from empanada_core.io import atomic_write_text
>>> target = pathlib.Path(tempfile.mkdtemp()) / "notes.txt"
>>> _ = atomic_write_text(target, "done")
>>> target.read_text()
'done'
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "atomic_path",
    "atomic_output",
    "atomic_write_bytes",
    "atomic_write_text",
    "process_alive",
    "remove_stale_temporaries",
]


def _temporary_name(path: Path) -> Path:
    # the pid lets remove_stale_temporaries tell a killed writer's file from a live one's
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(6)}.tmp")


@contextlib.contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Give a temporary path next to ``path``; move it onto ``path`` when the block ends.

    For writers that want a file name rather than a file object (``torch.save``,
    ``torch.jit.save``, ``tifffile.imwrite``). If the block raises, the
    temporary file is removed and ``path`` is untouched.

    Parameters
    ----------
    path : path-like
        The file to create or replace.

    Yields
    ------
    Path
        Where to write; it does not exist yet.
    """
    path = Path(path)
    tmp = _temporary_name(path)
    try:
        yield tmp
        if tmp.exists():
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_output(path) -> Iterator[BinaryIO]:
    """Open a temporary binary file next to ``path``; move it into place on success.

    The temporary file is created with the process umask (like a plain ``open``)
    and removed if the block raises, so ``path`` is never left half written.

    Parameters
    ----------
    path : path-like
        The file to create or replace.

    Yields
    ------
    file object
        Opened for binary writing.
    """
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                     0o666)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; return the path."""
    path = Path(path)
    with atomic_output(path) as f:
        f.write(data)
    return path


def atomic_write_text(path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; return the path."""
    return atomic_write_bytes(path, text.encode(encoding))


def remove_stale_temporaries(path) -> list[Path]:
    """Delete temporary files that a killed writer left next to ``path``.

    A process killed while writing (``kill -9``, a lost node) cannot remove its
    temporary file; files whose writer process is no longer alive are removed,
    those of live writers are kept.

    Parameters
    ----------
    path : path-like
        The target file whose temporaries to look for.

    Returns
    -------
    list of Path
        The files removed.
    """
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*-*.tmp"):
        pid_text = tmp.name[len(path.name) + 2:].split("-", 1)[0]
        if not pid_text.isdigit() or process_alive(int(pid_text)):
            continue
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def process_alive(pid: int) -> bool:
    """True while a process with this id runs (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except OSError:
        return False
    return True
