"""The test seam for device health: mark device ``i`` of a node unhealthy with a reason, without hardware.

Two ways, both read on every health probe (so a test can flip a fault while the system runs):

- ``SUANLI_DEVICE_FAULTS="0=xid 79,3=ecc"``: faults of the devices of whatever node reads this environment
  (the local executor's machine, one Ray node whose agent was started with it);
- ``SUANLI_DEVICE_FAULTS_FILE=/path/faults.json``: ``{"NODE": {"INDEX": "REASON"}, "*": {...}}``, where NODE is the
  name the agent reports for its node and ``"*"`` matches every node. One file serves a whole multi-node test
  (Ray nodes on one machine, virtual nodes). :func:`set_fault` edits it atomically.

An injected fault makes the device unhealthy with reason ``injected: REASON``, whatever the probe said.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from suanli.devices.base import DeviceHealth

FAULTS_ENV = "SUANLI_DEVICE_FAULTS"
FAULTS_FILE_ENV = "SUANLI_DEVICE_FAULTS_FILE"


def _parse_env(text: str) -> dict[int, str]:
    out: dict[int, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        idx, _, reason = part.partition("=")
        try:
            out[int(idx)] = reason.strip() or "fault"
        except ValueError:
            continue  # a malformed entry is ignored, never a crash of the agent
    return out


def _read_file(path: str) -> dict[str, dict[str, str]]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def injected_faults(node: str | None = None) -> dict[int, str]:
    """Index -> reason of the faults injected for ``node`` (environment first, then the file's ``*`` and node
    entries)."""
    out = _parse_env(os.environ.get(FAULTS_ENV, ""))
    path = os.environ.get(FAULTS_FILE_ENV)
    if path:
        data = _read_file(path)
        for key in ("*", node):
            if key is None or not isinstance(data.get(key), dict):
                continue
            for i, reason in data[key].items():
                try:
                    out[int(i)] = str(reason) or "fault"
                except ValueError:
                    continue
    return out


def faults_by_node() -> dict[str, dict[int, str]]:
    """Every node's injected faults from the faults file (``"*"`` kept as its own key): one read for a whole
    fleet (the virtual executor's thousands of nodes)."""
    path = os.environ.get(FAULTS_FILE_ENV)
    out: dict[str, dict[int, str]] = {}
    for node, entry in (_read_file(path) if path else {}).items():
        if not isinstance(entry, dict):
            continue
        m: dict[int, str] = {}
        for i, reason in entry.items():
            try:
                m[int(i)] = str(reason) or "fault"
            except ValueError:
                continue
        if m:
            out[str(node)] = m
    return out


def apply_faults(health: Iterable[DeviceHealth], node: str | None = None) -> list[DeviceHealth]:
    faults = injected_faults(node)
    return [replace(h, healthy=False, reason=f"injected: {faults[h.index]}") if h.index in faults else h
            for h in health]


def set_fault(path: str | Path, node: str, index: int, reason: str | None) -> None:
    """Mark (``reason``) or clear (None) device ``index`` of ``node`` in the faults file, atomically."""
    p = Path(path)
    data = _read_file(str(p)) if p.exists() else {}
    entry = dict(data.get(node) or {})
    if reason is None:
        entry.pop(str(index), None)
    else:
        entry[str(index)] = reason
    data[node] = entry
    tmp = p.with_name(p.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, p)
