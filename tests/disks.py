"""Changing a test's own tmpfs (the `media` fixture of conftest.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def remount(mount_point: Path, options: str) -> None:
    """Change a test's tmpfs: "ro" for read-only media, "size=1m" for a nearly full disk."""
    subprocess.run(["mount", "-o", f"remount,{options}", str(mount_point)], check=True)
