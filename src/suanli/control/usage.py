"""Usage records: the chip-time of every ended attempt, per node, with its outcome and how much of it was useful.

One record per (attempt, node) with chips on it, written by the store in the same transaction that ends the
attempt (``Store.finish_attempt``, ``Store.spawn_failed``, ``Store.requeue_lost``): an attempt is ended once, so it
is counted once, whatever crashes in between (the unique key ``(attempt_id, node)`` makes a second insert fail
the transaction rather than count twice).

Useful and lost work, per outcome (the same rules as the digital twin, ``sim/engine.py``):

| outcome | useful | lost (cause) |
|---|---|---|
| ``succeeded`` | all | - |
| ``preempted``, ``stopped`` | all (the job keeps its progress: it checkpoints when asked to stop) | - |
| ``node-lost`` | all but the lost part | the device-seconds since the last checkpoint (``lost_device_s``), else all |
| ``failed``, ``cancelled``, ``aborted``, ``lost``, ``spawn-failed`` | - | all |

Chips are devices, a fractional share counted as its fraction (``milli / 1000``). CPU-only attempts hold no chips
and have no record.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from suanli.control.types import AttemptOutcome

#: outcomes whose chip-time counts as useful work (node-lost: all but its lost part)
USEFUL = frozenset({AttemptOutcome.SUCCEEDED, AttemptOutcome.PREEMPTED, AttemptOutcome.STOPPED,
                    AttemptOutcome.NODE_LOST})


def chips_per_node(placement: Mapping[str, Any] | str) -> list[tuple[str, str, float]]:
    """(node, accelerator model, chips) for every node of a placement that holds chips."""
    pl = json.loads(placement) if isinstance(placement, str) else placement
    milli = int(pl.get("milli", 1000))
    model = str(pl.get("model") or "")
    out = []
    for node, loc in zip(pl.get("nodes", []), pl.get("local", []), strict=False):
        chips = len(loc) * milli / 1000.0
        if chips > 0:
            out.append((str(node), model, chips))
    return out


def records(*, attempt_id: int, job_id: int, job: Mapping[str, Any], placement: Mapping[str, Any] | str,
            started_at: float, ended_at: float, outcome: AttemptOutcome | str,
            lost_device_s: float | None = None, energy_j: Mapping[str, float | None] | None = None
            ) -> list[dict[str, Any]]:
    """The usage rows of one ended attempt. ``job``: its ``name``, ``tenant``, ``queue`` and ``kind``;
    ``energy_j``: measured board energy per node (joules) where the executor could read it."""
    outcome = AttemptOutcome(outcome)
    dur = max(0.0, float(ended_at) - float(started_at))
    per = chips_per_node(placement)
    total_chips = sum(c for _, _, c in per)
    rows = []
    for node, model, chips in per:
        chip_s = chips * dur
        if outcome == AttemptOutcome.NODE_LOST and lost_device_s is not None and total_chips > 0:
            lost = min(chip_s, max(0.0, float(lost_device_s)) * chips / total_chips)
        elif outcome in USEFUL and outcome != AttemptOutcome.NODE_LOST:
            lost = 0.0
        else:
            lost = chip_s
        e = (energy_j or {}).get(node)
        rows.append({
            "attempt_id": attempt_id, "job_id": job_id, "job_name": str(job.get("name") or ""),
            "tenant": str(job.get("tenant") or ""), "queue": str(job.get("queue") or ""),
            "kind": str(job.get("kind") or ""), "node": node, "model": model, "chips": chips,
            "started_at": float(started_at), "ended_at": float(ended_at), "chip_s": chip_s,
            "useful_chip_s": chip_s - lost, "lost_chip_s": lost, "outcome": outcome,
            "energy_j": None if e is None else float(e),
        })
    return rows
