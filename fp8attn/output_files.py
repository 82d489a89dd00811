"""Where the package writes files a user named (reports, plots, calibrations): the folders on
the way are made first, so that `--json out/report.json` works in a fresh checkout."""
from __future__ import annotations

from pathlib import Path


def writable(path) -> Path:
    """path as a Path, its parent folders created if missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
