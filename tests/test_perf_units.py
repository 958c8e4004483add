"""Parsing of token counts, durations and accelerator lists."""

from __future__ import annotations

import pytest

from suanli.errors import SuanliError, UnknownName
from suanli.perf.units import InvalidQuantity, parse_accelerators, parse_duration, parse_positive_int, parse_tokens


@pytest.mark.parametrize("text,value", [("14.8T", 14.8e12), ("500B", 5e11), ("1e12", 1e12), ("2M", 2e6),
                                        ("300k", 3e5), ("4096", 4096.0), ("1,000", 1000.0), (" 15t ", 15e12)])
def test_parse_tokens(text: str, value: float) -> None:
    assert parse_tokens(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["abc", "", "-5T", "0", "1.2.3", "5X", "nan", "inf"])
def test_parse_tokens_rejects(text: str) -> None:
    with pytest.raises(InvalidQuantity):
        parse_tokens(text)


@pytest.mark.parametrize("text,value", [("2s", 2.0), ("100ms", 0.1), ("250us", 250e-6), ("1.5", 1.5),
                                        ("5min", 300.0), ("1h", 3600.0)])
def test_parse_duration(text: str, value: float) -> None:
    assert parse_duration(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["fast", "-1s", "0ms", "2 days"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(InvalidQuantity):
        parse_duration(text)


def test_errors_are_user_errors() -> None:
    assert issubclass(InvalidQuantity, SuanliError)
    with pytest.raises(InvalidQuantity):
        parse_positive_int("-5", "--chips")
    with pytest.raises(InvalidQuantity):
        parse_positive_int("x", "--chips")


def test_parse_accelerators_resolves_aliases_in_order() -> None:
    assert parse_accelerators("h800, br100,910B,H800") == ["H800", "BR100", "910B"]
    with pytest.raises(UnknownName):
        parse_accelerators("H800,TPUv9")
    with pytest.raises(InvalidQuantity):
        parse_accelerators(" , ")
