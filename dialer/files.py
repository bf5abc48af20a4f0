"""Files the dialer creates are private to the user that runs it: directories 0700, files 0600,
whatever the umask (it can only take permissions away, and a mode is set explicitly after each
creation so that an odd umask cannot leave one unreadable either).

What exists already is left as it is: an administrator who made the database group-readable for
a team of operators on purpose keeps it so (``dialer init`` says when others can read it).
"""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """``path`` as a directory: it and each missing parent are created 0700."""
    path = path.expanduser()
    missing: list[Path] = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, DIR_MODE)
        except FileExistsError:
            continue  # made by someone else meanwhile: theirs to set
        os.chmod(d, DIR_MODE)
    return path


def create_private_file(path: Path) -> bool:
    """Create an empty file 0600 (and its missing directories 0700); False if it existed."""
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return True


def write_private(path: Path, data: bytes) -> None:
    """Write ``path`` whole (a temporary file renamed over it), 0600, directories 0700."""
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)


def others_can_read(path: Path) -> int | None:
    """The mode of ``path`` when group or others have any access to it, else None."""
    mode = stat.S_IMODE(path.stat().st_mode)
    return mode if mode & 0o077 else None
