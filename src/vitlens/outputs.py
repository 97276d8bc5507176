"""Files people open and share (pictures, JSON, HTML): written whole or not at all, readable as usual.

Temporary files are created private (mode 0600); the finished file gets the permissions any new
file gets here (0666 minus the umask), so a report can be served or shared like any other file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _new_file_mode() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return 0o666 & ~mask


def write_output(path: str | os.PathLike, write: Callable[[str], Any]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, give it the usual permissions, rename it."""
    from .checkpoint.files import atomic_write

    mode = _new_file_mode()

    def write_then_open_up(tmp: str) -> None:
        write(tmp)
        os.chmod(tmp, mode)

    path = Path(path)
    atomic_write(path, write_then_open_up)
    return path
