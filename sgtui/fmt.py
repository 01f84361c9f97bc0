"""Number formatting shared by reports and the UI: one place decides how a value reads."""

from __future__ import annotations

MISSING = "—"


def secs(x: float | None, digits: int = 2) -> str:
    if x is None:
        return MISSING
    if x >= 100:
        return f"{x:.0f}s"
    return f"{x:.{digits}f}s"


def ms(x: float | None) -> str:
    if x is None:
        return MISSING
    return f"{x:.0f}ms" if x >= 100 else f"{x:.1f}ms"


def num(x: float | None, digits: int = 1) -> str:
    return MISSING if x is None else f"{x:,.{digits}f}"


def mib(x: float | None) -> str:
    if x is None:
        return MISSING
    return f"{x / 1024:.2f}GiB" if abs(x) >= 1024 else f"{x:.0f}MiB"


def pct(x: float | None, digits: int = 1, sign: bool = True) -> str:
    if x is None:
        return MISSING
    return f"{x:+.{digits}f}%" if sign else f"{x:.{digits}f}%"


def band(lo: float, hi: float) -> str:
    return f"[{lo:+.0f},{hi:+.0f}]%"


def unit_value(x: float | None, unit: str) -> str:
    if unit == "s":
        return secs(x)
    if unit == "ms":
        return ms(x)
    return num(x)
