"""``python -m vitlens ...`` (also what ``torchrun -m vitlens`` runs)."""

from .cli import main

raise SystemExit(main())
