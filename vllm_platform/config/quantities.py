"""Kubernetes quantities, parsed by the kubernetes client's own parser, within the bounds the platform takes."""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Optional

from kubernetes.utils import parse_quantity

BINARY_SUFFIXES = ("Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
# Kubernetes' quantity grammar (apimachinery's resource.Quantity), whole and ASCII only: the parser below takes
# Python's Decimal syntax too, which admits "NaN", "Infinity", "2_0", other scripts' digits and whitespace.
QUANTITY = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?")
# The largest integer the API server keeps a quantity's value in (an int64): of millicores for a CPU,
# of bytes for memory; beyond it ("1e400", say) it refuses the object.
INT64_MAX = 2**63 - 1


def _quantity(text: str) -> Optional[Decimal]:
    if not QUANTITY.fullmatch(text):
        return None
    try:
        value = parse_quantity(text)
    except (ValueError, TypeError):
        return None
    return value if value >= 0 else None


def cpu_millis(text: str) -> int:
    """Millicores of a CPU quantity in cores or millicores ("3", "3500m"); nothing finer than 1m."""
    value = _quantity(text)
    if value is None or text.endswith(BINARY_SUFFIXES) or value * 1000 > INT64_MAX or (value * 1000) % 1:
        raise ValueError(f"{text!r} is not a CPU quantity such as \"3\" or \"3500m\"")
    return int(value * 1000)


def memory_mib(text: str) -> int:
    """MiB of a memory quantity ("12Gi", "12288Mi", "12G"), rounded up."""
    value = _quantity(text)
    if value is None or value > INT64_MAX:
        raise ValueError(f"{text!r} is not a memory quantity such as \"12Gi\" or \"12288Mi\"")
    return math.ceil(value / 2**20)


def format_cpu(millis: int) -> str:
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def format_memory(mib: int) -> str:
    return f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi"
