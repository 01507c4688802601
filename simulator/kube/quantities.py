"""Kubernetes resource quantities ("250m", "1.5", "512Mi", "1G") as integers.

The simulated scheduler counts CPU in millicores and memory in bytes, as the real one does;
values are parsed once per distinct string (manifests repeat the same few quantities).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from functools import lru_cache

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
            "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9),
            "T": Decimal(10**12), "P": Decimal(10**15), "E": Decimal(10**18)}


@lru_cache(maxsize=4096)
def quantity(text: str | int | float) -> Decimal:
    """The value of a quantity in base units; ValueError on nonsense."""
    if isinstance(text, int | float):
        return Decimal(str(text))
    s = str(text).strip()
    for suffix, factor in _BINARY.items():
        if s.endswith(suffix):
            return _number(s[: -len(suffix)], text) * factor
    if s[-1:] in _DECIMAL and not s[-1:].isdigit() and s[-1:] != "":
        return _number(s[:-1], text) * _DECIMAL[s[-1]]
    return _number(s, text)


def _number(s: str, original: object) -> Decimal:
    try:
        value = Decimal(s)
    except InvalidOperation:
        raise ValueError(f"not a quantity: {original!r}") from None
    if not value.is_finite():
        raise ValueError(f"not a quantity: {original!r}")
    return value


def cpu_millis(text: str | int | float) -> int:
    return int((quantity(text) * 1000).to_integral_value(rounding="ROUND_CEILING"))


def mem_bytes(text: str | int | float) -> int:
    return int(quantity(text).to_integral_value(rounding="ROUND_CEILING"))
