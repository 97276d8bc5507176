"""Files people open and share (pictures, JSON, HTML): written whole or not at all, readable as usual."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_output(path: str | os.PathLike, write: Callable[[str], Any]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    The finished file gets the permissions any new file gets here (0666 minus the umask).
    """
    from .checkpoint.files import atomic_write

    path = Path(path)
    atomic_write(path, write)
    return path
