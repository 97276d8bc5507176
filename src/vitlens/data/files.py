"""Image files from the command line: paths, folders and globs in, readable images out.

Errors name the file and what was wrong with it, before any model runs.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
# 8-bit modes PIL converts faithfully to RGB or L; 16/32-bit and float images need a user's choice of scale.
READABLE_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr")


def collect_image_paths(specs: Iterable[str | Path]) -> list[Path]:
    """Expand files, folders (searched recursively for image files) and glob patterns, in a stable order.

    Each spec keeps its place; within a folder or glob the files are sorted. Duplicates are dropped.
    """
    found: list[Path] = []
    for spec in specs:
        text = str(spec)
        path = Path(text)
        if path.is_dir():
            matches = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not matches:
                raise FileNotFoundError(f"folder {text} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
        elif path.is_file():
            matches = [path]
        elif glob.has_magic(text):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            if not matches:
                raise FileNotFoundError(f"no files match the pattern {text}")
        else:
            raise FileNotFoundError(f"no such image file or folder: {text}")
        found.extend(matches)
    unique = list(dict.fromkeys(found))
    if not unique:
        raise ValueError("no images given: pass image files, folders or glob patterns")
    return unique


def read_image(path: str | Path):
    """Open an image with PIL and load its pixels; ``ValueError`` when it is not a readable 8-bit image."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            image = im.copy()
    except FileNotFoundError:
        raise
    except Image.DecompressionBombError as e:  # PIL's guard against images that would fill the memory
        raise ValueError(f"{path} is too large to read safely: {e}") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot read {path} as an image: {e}") from e
    if image.mode not in READABLE_MODES:
        raise ValueError(
            f"{path} has image mode {image.mode!r}; vitlens reads 8-bit images ({', '.join(READABLE_MODES)}). "
            "Convert it first, e.g. to 8-bit RGB or grey."
        )
    return image


def unique_stems(paths: list[Path], reserved: tuple[str, ...] = ()) -> list[str]:
    """A distinct, file-name-safe name per path, for a folder or file inside an output folder.

    The file stem with anything but letters, digits, ``-``, ``_`` and inner dots replaced, never
    empty, hidden, ``.`` or ``..`` (so it cannot leave the output folder), never one of
    ``reserved`` (the run's own files); numbered ``-2``, ``-3``... when two collide (case-insensitively,
    for file systems that fold case).
    """
    names: list[str] = []
    taken = {r.lower() for r in reserved}
    for p in paths:
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in p.stem).strip(".") or "image"
        name, n = safe, 1
        while name.lower() in taken:
            n += 1
            name = f"{safe}-{n}"
        taken.add(name.lower())
        names.append(name)
    return names
