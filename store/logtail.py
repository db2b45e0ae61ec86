"""The last lines of a log file under the data directory (a run's train.log, vLLM's log), read from its end."""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path

READ_BYTES = 64 * 1024  # enough for the last few dozen lines; a multi-GB log is never read whole


def tail(path: str | Path, lines: int = 25) -> str:
    """The last `lines` lines of `path`, "" when it does not exist or cannot be read."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - READ_BYTES))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(deque(text.splitlines(), maxlen=lines))
