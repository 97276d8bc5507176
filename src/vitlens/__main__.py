"""``python -m vitlens ...`` (also what ``torchrun -m vitlens`` runs)."""

from .commands.main import main

raise SystemExit(main())
