"""Parsing of the quantities people type: token counts (``14.8T``), durations (``100ms``), accelerator lists."""

from __future__ import annotations

import math
import re

from suanli.catalog.accelerators import resolve_accelerator
from suanli.errors import SuanliError


class InvalidQuantity(SuanliError, ValueError):
    """A number, token count or duration that does not parse or is out of range."""


_TOKEN_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12, "p": 1e15}
_TIME_SUFFIX = {"": 1.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "min": 60.0, "h": 3600.0}


def parse_tokens(text: str | float | int, what: str = "token count") -> float:
    """``14.8T`` -> 1.48e13, ``500B`` -> 5e11, ``2M`` -> 2e6, ``1e12`` -> 1e12 (K/M/B/T, case-insensitive)."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        value = float(text)
    else:
        s = str(text).strip().replace(",", "").replace("_", "")
        m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMbBgGtTpP]?)", s)
        if not m and re.fullmatch(r"-\s*[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?\s*[kKmMbBgGtTpP]?", s):
            raise InvalidQuantity(f"{what} must be a positive number, got {text!r}")
        if not m:
            raise InvalidQuantity(f"{what} {text!r} is not a number like 14.8T, 500B, 2M or 1e12")
        value = float(m.group(1)) * _TOKEN_SUFFIX[m.group(2).lower()]
    if not math.isfinite(value) or value <= 0:
        raise InvalidQuantity(f"{what} must be a positive number, got {text!r}")
    return value


def parse_duration(text: str | float | int, what: str = "duration") -> float:
    """Seconds from ``2s``, ``100ms``, ``250us``, ``1.5`` (seconds), ``5min``, ``1h``."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        value = float(text)
    else:
        s = str(text).strip().lower()
        m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(ms|us|µs|min|s|h)?", s)
        if not m and re.fullmatch(r"-\s*[0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?\s*(ms|us|µs|min|s|h)?", s):
            raise InvalidQuantity(f"{what} must be positive, got {text!r}")
        if not m:
            raise InvalidQuantity(f"{what} {text!r} is not a duration like 2s, 100ms or 250us")
        value = float(m.group(1)) * _TIME_SUFFIX[m.group(2) or ""]
    if not math.isfinite(value) or value <= 0:
        raise InvalidQuantity(f"{what} must be positive, got {text!r}")
    return value


def parse_count(text: str | float | int, what: str) -> float:
    """A token count that may be zero (``--image-tokens 0``); same forms as :func:`parse_tokens`."""
    if str(text).strip() in ("0", "0.0"):
        return 0.0
    return parse_tokens(text, what)


def parse_positive_int(text: str | int, what: str) -> int:
    try:
        value = int(str(text).strip().replace(",", "").replace("_", ""))
    except ValueError:
        raise InvalidQuantity(f"{what} {text!r} is not a whole number") from None
    if value <= 0:
        raise InvalidQuantity(f"{what} must be a positive whole number, got {text!r}")
    return value


def parse_accelerators(text: str | list[str]) -> list[str]:
    """Catalog keys from ``"H800,BR100,910B"`` (or a list); unknown names raise UnknownName; order kept, no repeats."""
    items = text if isinstance(text, list) else str(text).split(",")
    keys: list[str] = []
    for item in items:
        name = item.strip()
        if not name:
            continue
        key = resolve_accelerator(name)
        if key not in keys:
            keys.append(key)
    if not keys:
        raise InvalidQuantity("no accelerator given (e.g. --accelerator H200,910B)")
    return keys
