"""The two guards on files: what may be read, and what may be replaced.

* :func:`read_bounded` reads a file the user or a cache names only when it is a regular file of at
  most a stated size: never a FIFO (which would block the reader forever), a device (``/dev/zero``
  fills memory), a folder, or a ``/proc`` / ``/sys`` entry (their sizes are not what a read returns),
  also when a symbolic link leads there. It opens with ``O_NONBLOCK`` (opening a FIFO does not wait
  for a writer), checks the *open* descriptor with ``fstat`` (no swap between check and read), and
  reads at most the bound plus one byte. :func:`check_regular` is the same check for a file handed by
  path to a library that opens it itself (safetensors, torch).
* :func:`guard_destination` runs before a command replaces a file: the destination must be absent or
  a regular file the command recognises as its own kind (a landscape CSV of the same points, a
  latency table); anything else needs ``--overwrite``, and a non-regular file (``/dev/full``, a FIFO,
  a folder) is refused even then, since the atomic rename would put a plain file in its place.

Every refusal is one ``SnapViTError`` naming the file, what it is and the bound. ``load_pruned.py``,
which every export carries and which must run without this library, repeats the few lines of the
regular-file check it needs.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from snapvit_core.errors import SnapViTError

MAX_RECOGNISED_BYTES = 16 << 20  # how much of an existing destination is read to recognise it
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
_CHUNK = 1 << 20
_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "a special file")


def _pseudo_file_systems() -> set[int]:
    """Devices of /proc and /sys where they are mounts of their own (not folders of the root file system)."""
    try:
        root = os.stat("/").st_dev
    except OSError:
        return set()
    devices = set()
    for folder in ("/proc", "/sys"):
        try:
            device = os.stat(folder).st_dev
        except OSError:
            continue
        if device != root:
            devices.add(device)
    return devices


def _refusal(info: os.stat_result) -> str | None:
    """Why a file with this status is not a regular file to read, or None."""
    if not stat.S_ISREG(info.st_mode):
        return f"it is {_kind(info.st_mode)}, not a regular file"
    if info.st_dev in _pseudo_file_systems():
        return "it is a /proc or /sys entry, not a regular file"
    return None


def _open_regular(path: Path, max_bytes: int, what: str, fix: str) -> tuple[int, int]:
    """(open descriptor, size) of ``path`` after the checks; the caller closes the descriptor."""

    def refuse(reason: str) -> SnapViTError:
        return SnapViTError(f"Cannot read {what} {path}: {reason}.", fix)

    try:
        reason = _refusal(os.stat(path))  # before opening: some devices act on open
        if reason:
            raise refuse(reason)
        descriptor = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise refuse("it is missing (no such file)") from None
    except OSError as error:
        raise refuse(error.strerror or str(error)) from None
    try:
        info = os.fstat(descriptor)  # what was opened, not what the name pointed to a moment ago
        reason = _refusal(info)
        if reason:
            raise refuse(reason)
        if info.st_size > max_bytes:
            raise refuse(f"it is {info.st_size:,} bytes, larger than the limit of {max_bytes:,} bytes")
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor, info.st_size


def read_bounded(path: str | os.PathLike, max_bytes: int, what: str, fix: str = "") -> bytes:
    """The bytes of ``path`` when it is a regular file of at most ``max_bytes`` bytes.

    Args:
        what: what the file is, for messages ("the latency table").
        fix: what the user can do (the error's second half).

    Raises:
        SnapViTError: missing, unreadable, not a regular file (FIFO, device, folder, /proc entry, also
            behind a symbolic link), or larger than ``max_bytes`` (also if it grows while read).
    """
    path = Path(path)
    descriptor, _ = _open_regular(path, max_bytes, what, fix)
    chunks, total = [], 0
    try:
        while total <= max_bytes:
            chunk = os.read(descriptor, min(_CHUNK, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as error:
        raise SnapViTError(f"Cannot read {what} {path}: {error.strerror or error}.", fix) from None
    finally:
        os.close(descriptor)
    if total > max_bytes:
        raise SnapViTError(f"Cannot read {what} {path}: it is larger than the limit of {max_bytes:,} bytes.", fix)
    return b"".join(chunks)


def check_regular(path: str | os.PathLike, max_bytes: int, what: str, fix: str = "") -> int:
    """The size of ``path`` after the checks of :func:`read_bounded`, for a file another library opens by path."""
    descriptor, size = _open_regular(Path(path), max_bytes, what, fix)
    os.close(descriptor)
    return size


def guard_destination(
    path: str | os.PathLike,
    what: str,
    overwrite: bool,
    is_ours: Callable[[bytes], bool] | None = None,
    option: str = "--overwrite",
) -> None:
    """Refuse, before any work, to replace ``path`` with a new ``what`` unless that is safe.

    Safe: ``path`` is absent, or a regular file that ``is_ours`` recognises from its bytes (at most
    ``MAX_RECOGNISED_BYTES`` are read), or a regular file and ``overwrite`` is set. A non-regular
    file (a device such as ``/dev/full``, a FIFO, a folder; a symbolic link is judged by its target)
    is refused even with ``overwrite``. Nothing is written.

    Args:
        what: the kind of file the command writes ("a landscape CSV").
        option: how the user allows the replacement, named in the message.
    """
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return  # absent (or a link to nothing: the rename replaces the link, not a file)
    except OSError as error:  # a name too long, a parent that is a file, no permission
        raise SnapViTError(
            f"Cannot write {what} to {path}: {error.strerror or error}.", "Choose another file name."
        ) from None
    reason = _refusal(info)
    if reason:
        raise SnapViTError(
            f"Refusing to write {what} to {path}: {reason}.",
            "Name a regular file: a new one, or one this command wrote.",
        )
    if overwrite:
        return
    if is_ours is not None:
        try:
            recognised = bool(is_ours(read_bounded(path, MAX_RECOGNISED_BYTES, what)))
        except Exception:  # noqa: BLE001 - a file that cannot be read or parsed is not recognised
            recognised = False
        if recognised:
            return
    raise SnapViTError(
        f"{path} already exists and is not {what} this command wrote; writing would replace it.",
        f"Choose a new file name, or pass {option} to replace it.",
    )
