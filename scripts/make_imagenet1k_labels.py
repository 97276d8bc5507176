"""Regenerate ``src/vitlens/imagenet1k_labels.txt`` from the ImageNet-1k class names shipped with timm.

One line per class, in classifier order: ``<WordNet synset>\t<names>``, e.g.
``n02123045\ttabby, tabby cat``. Run: ``.venv/bin/python scripts/make_imagenet1k_labels.py``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from timm.data import ImageNetInfo

TARGET = Path(__file__).resolve().parents[1] / "src" / "vitlens" / "imagenet1k_labels.txt"


def main() -> None:
    info = ImageNetInfo("imagenet-1k")
    lines = [f"{synset}\t{info.label_name_to_description(synset)}" for synset in info.label_names()]
    if len(lines) != 1000:
        raise SystemExit(f"expected 1000 ImageNet-1k classes from timm, got {len(lines)}")
    fd, tmp = tempfile.mkstemp(dir=TARGET.parent, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, TARGET)
    print(f"wrote {len(lines)} classes to {TARGET}")


if __name__ == "__main__":
    main()
