"""Win rate of an adapter over the base model in A/B votes: the UI's name for store.winrate.

The math is in `store.winrate` so that the store's lineage query can use it too (store may not
import ui). Kept here so the tabs and their tests import it from where they always did.

    .venv/bin/python -m pytest tests/test_ui_winrate.py -q
"""

from __future__ import annotations

from store.winrate import Z_95, WinRate, wilson_interval

__all__ = ["Z_95", "WinRate", "wilson_interval"]
