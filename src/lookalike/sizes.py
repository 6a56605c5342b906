"""Byte counts as people write them: '2GB', '512MiB' in, '1.5 GB' out.

kB/MB/GB/TB are powers of 1000 and KiB/MiB/GiB/TiB powers of 1024, as the SI
and IEC prefixes say; output always uses the decimal units.
"""

from __future__ import annotations

import re

from .errors import InvalidArgumentError

_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?)b?\s*", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'2GB', '512MB', '1.5GiB', '1000000' -> bytes; InvalidArgumentError otherwise."""
    match = _SIZE.fullmatch(text)
    if not match or float(match.group(1)) <= 0:
        raise InvalidArgumentError(f"a size such as 2GB, 512MB or 1.5GiB is needed, not {text!r}", "size")
    number, unit, binary = float(match.group(1)), match.group(2).lower(), bool(match.group(3))
    power = " kmgt".index(unit) if unit else 0
    return int(number * (1024 if binary else 1000) ** power)


def format_size(value: float | None, spec: str = ".3g") -> str:
    """Bytes as '1.5 GB', '640 kB' or '12 B'; `spec` formats the number ('.2f' for '1.50 GB')."""
    value = float(value or 0)
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:{spec}} {unit}"
    return f"{value:.0f} B"
