"""Writing benchmark results into docs/benchmarks.md, one section per benchmark, and describing the machine."""

from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\nEvery number here was measured by the command shown in its section, on the machine it names.\n"
)


def machine_description() -> str:
    """Cores, CPU model, memory, Python and library versions, and the date."""
    cpu = platform.processor() or "unknown CPU"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        match = re.search(r"Model name:\s*(.+)", lscpu)
        cpu = match.group(1).strip() if match else cpu
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = []
    for name in ("numpy", "PIL", "faiss", "onnxruntime", "torch"):
        try:
            module = __import__(name)
            versions.append(f"{name} {module.__version__}")
        except ImportError:
            pass
    return (
        f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB RAM, no GPU; Python {platform.python_version()}; "
        f"{', '.join(versions)}; {datetime.date.today().isoformat()}"
    )


def write_section(title: str, body: str) -> None:
    """Add or replace the section `## title` of docs/benchmarks.md, leaving the others alone."""
    text = DOC.read_text() if DOC.exists() else HEADER
    section = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)
