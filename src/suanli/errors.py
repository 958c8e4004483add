"""Errors that carry a message meant for a person: the CLI prints them without a traceback."""

from __future__ import annotations


class SuanliError(Exception):
    """Base class of every error suanli reports to a user."""


class UnknownName(SuanliError, KeyError):
    """A catalog name (accelerator, LLM, policy...) that nothing resolves to."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want the plain message
        return str(self.args[0]) if self.args else "unknown name"


class UnknownFigure(SuanliError):
    """A figure the catalog has no public source for (null); the caller asked for it anyway."""


class SpecError(SuanliError):
    """A cluster or job description that does not validate; the message names file, line and field."""
