"""A pickle that would run code: what a hostile weights or training-state file carries."""

from __future__ import annotations

import pathlib


class Payload:
    """Unpickling it creates the file ``marker``; a test passes only if that file never appears."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))
