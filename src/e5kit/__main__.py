"""``python -m e5kit`` runs the CLI (torchrun launches stages this way)."""

from e5kit.cli import main

main()
