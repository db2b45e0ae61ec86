"""`python -m ui.cli ...` runs the tuneloop CLI (what the `tuneloop` script does)."""

from ui.cli import app

app()
