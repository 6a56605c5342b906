"""What the Ray benchmarks share: the versions compared, the photo folders, and a re-run in loopback-only namespaces.

ray_driver.py and ray_ingest.py both run as root, make their folders, then run themselves again inside new
network and PID namespaces (only loopback exists there; every Ray process ends with them), where each version of
the code gets a Ray cluster of its own started with that version on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

PORT = 6379
THIS_CHECKOUT = "this checkout"
SOURCE = Path(__file__).resolve().parents[1] / "src"


def versions_to_compare(baseline: str | None) -> dict[str, str]:
    """Name -> src folder: this checkout's, then the baseline's when one is given."""
    versions = {THIS_CHECKOUT: str(SOURCE)}
    if baseline:
        versions["baseline"] = str(Path(baseline).resolve())
    return versions


def run_in_namespaces(
    script: str,
    prefix: str,
    folders: dict[str, Callable[[Path], None]],
    arguments: list[str],
    versions: dict[str, str],
) -> None:
    """Make each folder in a new work folder, then run `script --inside WORK --versions JSON ARGUMENTS` in them.

    `folders` maps a folder's name to what fills it. The work folder is removed afterwards, whatever happens.
    """
    work = Path(tempfile.mkdtemp(prefix=prefix))  # short: Ray's socket paths must fit in 107 bytes
    try:
        for name, make in folders.items():
            make(work / name)
        namespaces = ["unshare", "--net", "--pid", "--fork", "--mount-proc"]
        me = [sys.executable, script, "--inside", str(work), "--versions", json.dumps(versions)]
        subprocess.run([*namespaces, *me, *arguments], check=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def enter_namespaces() -> None:
    """Inside the namespaces: bring loopback up and keep Ray from reporting usage."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"


def ray_cli(*args: str) -> None:
    """Run the `ray` command beside this Python, quietly."""
    ray = str(Path(sys.executable).with_name("ray"))
    subprocess.run([ray, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_head(work: Path, *node: str) -> None:
    """A head node on 127.0.0.1:PORT with its temporary files under `work`."""
    ray_cli("start", "--head", f"--port={PORT}", "--include-dashboard=false", f"--temp-dir={work / 'r'}", *node)


def stop_cluster() -> None:
    ray_cli("stop", "--force")
