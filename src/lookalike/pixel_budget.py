"""How many pixels one decode may take: the memory available, and the default pixel limit derived from it.

Pillow's fixed 89 MP decompression-bomb guard refuses legitimate 100-200 MP scans and panoramas on big
machines and is too generous on small ones; lookalike's limit follows the machine (or its cgroup).
"""

from __future__ import annotations

import os

# Peak memory per decoded pixel: Pillow keeps RGB as 4 bytes a pixel, and mode conversion, alpha flattening
# and orientation each make a full-size copy while the previous one is alive.
BYTES_PER_PIXEL = 16
MEMORY_SHARE = 0.5  # of the memory available, what decoding one image may take
MIN_DEFAULT_MEGAPIXELS = 16.0  # the derived limit never drops below a 16 MP photo
PILLOW_DEFAULT_MEGAPIXELS = 1024 * 1024 * 1024 // 4 // 3 / 1e6  # used when the memory available is unknown


def available_memory() -> int | None:
    """Bytes of memory this process can still use (the machine's, or its cgroup's if smaller); None if unknown."""
    known = [value for value in (_machine_available(), _cgroup_room()) if value is not None]
    return min(known) if known else None


def _machine_available() -> int | None:
    try:
        with open("/proc/meminfo", "rb") as meminfo:
            for line in meminfo:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def _cgroup_room() -> int | None:
    """What a cgroup v2 memory limit leaves (containers, systemd services); None when unlimited or absent."""
    try:
        with open("/sys/fs/cgroup/memory.max") as limit_file, open("/sys/fs/cgroup/memory.current") as usage:
            limit, current = limit_file.read().strip(), usage.read().strip()
        return None if limit == "max" else max(0, int(limit) - int(current))
    except (OSError, ValueError):
        return None


def default_max_megapixels(concurrency: int = 1) -> float:
    """The pixel limit (in millions) used when none is given: MEMORY_SHARE of the memory available.

    `concurrency` is how many images are decoded at once (decoding threads): each gets its share.
    Pillow's fixed 89 MP guard refuses legitimate 100-200 MP scans and panoramas on big machines
    and is too generous on small ones; this follows the machine.
    """
    memory = available_memory()
    if memory is None:
        return PILLOW_DEFAULT_MEGAPIXELS
    derived = memory * MEMORY_SHARE / max(1, concurrency) / BYTES_PER_PIXEL / 1e6
    return max(MIN_DEFAULT_MEGAPIXELS, derived)
