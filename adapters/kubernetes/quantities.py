"""Kubernetes quantities read by the adapter: CPU to millicores, memory to bytes.

Written for the adapter alone (the simulator has its own parser; the two must not share
assumptions). Parsed values are cached: a cluster repeats the same few request strings.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from functools import lru_cache

_SUFFIX = {
    "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30), "Ti": Decimal(2**40),
    "Pi": Decimal(2**50), "Ei": Decimal(2**60), "n": Decimal("1e-9"), "u": Decimal("1e-6"),
    "m": Decimal("1e-3"), "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"),
    "T": Decimal("1e12"), "P": Decimal("1e15"), "E": Decimal("1e18"),
}


@lru_cache(maxsize=8192)
def _value(text: str) -> Decimal:
    s = text.strip()
    factor = Decimal(1)
    for suffix in ("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"):
        if s.endswith(suffix):
            s, factor = s[:-2], _SUFFIX[suffix]
            break
    else:
        if s and s[-1] in _SUFFIX:
            s, factor = s[:-1], _SUFFIX[s[-1]]
    try:
        value = Decimal(s) * factor
    except InvalidOperation:
        raise ValueError(f"not a Kubernetes quantity: {text!r}") from None
    if not value.is_finite():
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    return value


@lru_cache(maxsize=8192)
def _millicores(text: str) -> int:
    return int((_value(text) * 1000).to_integral_value(rounding="ROUND_CEILING"))


@lru_cache(maxsize=8192)
def _bytes(text: str) -> int:
    return int(_value(text).to_integral_value(rounding="ROUND_CEILING"))


def millicores(q: object) -> int:
    if q is None:
        return 0
    return _millicores(q if isinstance(q, str) else str(q))


def bytes_of(q: object) -> int:
    if q is None:
        return 0
    return _bytes(q if isinstance(q, str) else str(q))
