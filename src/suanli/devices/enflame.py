"""Enflame GCU. Its management tool is ``efsmi``; we found no public record of its output format, so nothing is
parsed: declare the devices. The visible-devices variables are those Enflame's gcushare device plugin sets."""

from __future__ import annotations

from suanli.devices.base import NoTool


class Enflame(NoTool):
    name = "Enflame"
    visible_env = ("TOPS_VISIBLE_DEVICES", "ENFLAME_VISIBLE_DEVICES")
    tool = "efsmi"
    limitations = ("no public sample of efsmi output: no discovery, no health probe (declare the devices)",
                   "no Enflame model is in the catalog yet",)
