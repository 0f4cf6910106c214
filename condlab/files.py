"""Writing a user's files: one rule for every command.

- Before any work, :func:`check_output` refuses a path that is a folder, a file that exists
  (unless ``--force``), and a folder that cannot be written; a missing folder is fine.
- :func:`atomic_write` creates missing folders, writes a temporary file beside the target,
  fsyncs it and renames it over the target: a failed write leaves the old file as it was.
  A new file gets the mode ``0o666`` minus the umask, a replaced file keeps its mode, and a
  symbolic link is written through (its target is replaced, the link stays).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO

from condlab.errors import CondlabError, UsageError


def check_output(path: str | Path, *, force: bool, flag: str) -> Path:
    """Refuse, before any work, a ``path`` that a later :func:`atomic_write` would fail on or
    that holds a file the user did not ask to replace (``--force``). ``flag`` names the option."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{flag} '{path}' is a folder; give a file name")
    if (path.exists() or path.is_symlink()) and not force:
        raise UsageError(f"{flag} '{path}' exists; pass --force to replace it, or choose another path")
    folder = _existing_ancestor(_target(path).parent)
    if not folder.is_dir():
        raise UsageError(f"{flag} '{path}': '{folder}' is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} '{path}': folder '{folder}' is not writable; choose another path")
    return path


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """``write`` into a temporary file beside ``path``, fsync, then rename it over ``path``.

    OSErrors and failures of ``write`` become a CondlabError naming ``path``; the temporary
    file is removed and what was at ``path`` is unchanged.
    """
    path = Path(path)
    target = _target(path)
    if target.is_dir():
        raise UsageError(f"'{path}' is a folder; give a file name")
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if target.exists():
            os.chmod(tmp, target.stat().st_mode & 0o7777)  # a replaced file keeps its mode
        os.replace(tmp, target)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError):
            raise CondlabError(f"cannot write '{path}': {e.strerror or e}; choose a writable path") from e
        if isinstance(e, Exception) and not isinstance(e, CondlabError):
            first = (str(e).strip().splitlines() or [""])[0]
            raise CondlabError(
                f"writing '{path}' failed ({type(e).__name__}: {first}); the previous file, "
                "if any, is unchanged"
            ) from e
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` with :func:`atomic_write`."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _target(path: Path) -> Path:
    """Where writing ``path`` lands: a symbolic link's target (resolved), else ``path``."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _existing_ancestor(folder: Path) -> Path:
    folder = folder.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder
