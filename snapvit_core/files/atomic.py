"""Atomic writes of files and folders: temp name next to the destination, fsync, rename.

* Files (:func:`atomic_path`): a crash or cancel mid-write never leaves a half-written file under
  the final name, and an existing file is replaced only once the new one is complete.
* Folders (:func:`staging_folder` + :func:`swap_folder_into_place`): a complete new folder is built
  under a hidden name, then exchanged with the old one in one step (Linux ``renameat2`` with
  ``RENAME_EXCHANGE``), so the destination holds one complete version at every instant. Where that
  call is missing the old folder is renamed to a backup first and restored by the next write if a
  crash falls between the two renames.
* Leftovers of killed writers (hidden ``.NAME.XXXXXXXX.tmp`` files, staging and backup folders)
  older than ``STALE_AFTER_S`` are removed by the next write to the same destination.
* Modes follow the process umask (files 0666 & ~umask, folders 0777 & ~umask), read without
  calling ``os.umask`` (which changes it for every thread while it is being read).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

STALE_AFTER_S = 3600.0  # a temp file or staging folder untouched this long belongs to a dead writer
STAGING_TAG, BACKUP_TAG = "snapvit-staging-", "snapvit-old-"  # in hidden folder names next to the target


def _umask_from_proc() -> int | None:
    """The umask from /proc/self/status (Linux >= 4.7), without changing it; None elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        return None
    return None


def _umask_at_import() -> int:
    # Only when /proc cannot tell: the one os.umask toggle happens while this module is imported
    # (under the import lock, before any caller thread can write through it).
    mask = _umask_from_proc()
    if mask is None:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


_IMPORT_UMASK = _umask_at_import()


def current_umask() -> int:
    """The process umask: live from /proc on Linux, else the value read at import."""
    mask = _umask_from_proc()
    return _IMPORT_UMASK if mask is None else mask


def file_mode() -> int:
    return 0o666 & ~current_umask()


def folder_mode() -> int:
    return 0o777 & ~current_umask()


def _temp_file_pattern(name: str) -> re.Pattern:
    return re.compile(rf"^\.{re.escape(name)}\.[A-Za-z0-9_]{{8}}\.tmp$")  # mkstemp: 8 random characters


def _age_s(path: Path) -> float:
    """Seconds since ``path`` (or, for a folder, anything directly in it) was last modified."""
    latest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        with contextlib.suppress(OSError):
            latest = max([latest, *(entry.stat(follow_symlinks=False).st_mtime for entry in os.scandir(path))])
    return time.time() - latest


def clean_stale(destination: str | os.PathLike) -> list[Path]:
    """Remove temp files and staging/backup folders of ``destination`` left by dead writers.

    Only hidden names this module creates for ``destination`` and older than ``STALE_AFTER_S`` are
    touched, so a writer still at work is left alone. Returns what was removed.
    """
    destination = Path(destination)
    folder, name = destination.parent, destination.name
    if not name or not folder.is_dir():
        return []
    temp_file = _temp_file_pattern(name)
    prefixes = (f".{name}.{STAGING_TAG}", f".{name}.{BACKUP_TAG}")
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for entry in entries:
        if not (temp_file.match(entry.name) or entry.name.startswith(prefixes)):
            continue
        path = Path(entry.path)
        try:
            if _age_s(path) < STALE_AFTER_S:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
        except OSError as error:  # another process got there first, or no permission: not ours to fix
            log.debug("could not remove stale %s: %s", path, error)
    if removed:
        log.info("removed %d stale temp item(s) next to %s", len(removed), destination)
    return removed


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path next to ``destination``; rename it over the destination on success.

    On any exception the temp file is removed and the destination is left untouched.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(destination)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600 and some writers (safetensors) recreate the file: saved files get normal modes.
        os.chmod(tmp, file_mode())
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, destination)
    finally:
        if tmp.exists():
            tmp.unlink()


def check_writable(destination: str | os.PathLike, what: str = "") -> None:
    """Refuse now, in one line, a file destination a long job could not write at its end.

    Creates (and removes) a probe temp file next to ``destination``: catches read-only mounts,
    missing permissions, a parent that is a file, and a destination that is a folder.
    """
    from snapvit_core.errors import SnapViTError

    destination = Path(destination)
    label = f"{what} {destination}".strip()
    try:
        if destination.is_dir():
            raise SnapViTError(f"Cannot write {label}: it is a folder.", "Name a file inside it.")
        destination.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise SnapViTError(
            f"Cannot write {label}: {error.strerror or error}.", "Choose a writable folder (checked before starting)."
        ) from error


def write_text_atomic(destination: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``destination`` atomically."""
    with atomic_path(destination) as tmp:
        tmp.write_text(text, encoding="utf-8")


# --- folders -------------------------------------------------------------------------------------


def staging_folder(destination: Path) -> Path:
    """A new empty hidden folder next to ``destination`` (mode per umask) to build its new version in."""
    clean_stale(destination)
    recover_backup(destination)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.{STAGING_TAG}", dir=destination.parent))
    os.chmod(staging, folder_mode())  # mkdtemp makes 0700
    return staging


def finish_folder(staging: Path) -> None:
    """Give every file in ``staging`` the umask mode and flush it to disk before it is swapped in."""
    for path in staging.rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.chmod(path, file_mode())
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        elif path.is_dir():
            os.chmod(path, folder_mode())


def _load_renameat2():
    name = ctypes.util.find_library("c")
    try:
        function = ctypes.CDLL(name, use_errno=True).renameat2 if name else None
    except (OSError, AttributeError):  # not Linux/glibc >= 2.28
        return None
    if function is not None:
        function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return function


_RENAMEAT2 = _load_renameat2()
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def exchange(first: Path, second: Path) -> bool:
    """Atomically swap two existing paths; False when the platform or file system cannot."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(second))


def recover_backup(destination: Path) -> Path | None:
    """After a crash between the two renames of the fallback swap: put the backup back in place."""
    if destination.exists() or destination.is_symlink():
        return None
    backups = sorted(
        destination.parent.glob(f".{glob_escape(destination.name)}.{BACKUP_TAG}*"), key=lambda p: p.stat().st_mtime
    )
    if not backups:
        return None
    os.rename(backups[-1], destination)
    log.warning("restored %s from the backup %s left by an interrupted export", destination, backups[-1].name)
    return destination


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def swap_folder_into_place(staging: Path, destination: Path) -> None:
    """Make the complete folder ``staging`` the ``destination``; the old one (if any) is deleted after.

    At every instant ``destination`` is either the complete old folder or the complete new one
    (with the fallback: or missing, with the old one complete under a backup name that the next
    write restores).
    """
    if not destination.exists():
        os.rename(staging, destination)
        return
    if exchange(staging, destination):  # staging now holds the old version
        old = staging
    else:
        old = Path(tempfile.mkdtemp(prefix=f".{destination.name}.{BACKUP_TAG}", dir=destination.parent))
        os.rename(destination, old)  # replaces the empty backup folder (same file system)
        try:
            os.rename(staging, destination)
        except BaseException:
            os.rename(old, destination)  # put the old version back
            raise
    shutil.rmtree(old, ignore_errors=True)
