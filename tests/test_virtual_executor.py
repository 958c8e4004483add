"""The virtual executor on its own (a fake wall clock): cluster specs, simulated runtimes and exit codes, stop and
kill, the twin's work-keeping rules, faults (scripted, random, injected), restart continuity."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from suanli.control.executors.base import AdoptVerdict, AttemptRecord, AttemptSpec
from suanli.control.executors.virtual import (
    DEFAULT_RUNTIME_S,
    VirtualExecutor,
    runtime_of,
    virtual_cluster,
)
from suanli.control.types import DeviceHealth, StopReason
from suanli.devices import FAULTS_FILE_ENV, set_fault
from suanli.errors import SpecError
from suanli.sim.engine import FailureConfig


class Wall:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def attempt(job: int, aid: int, n: int, spec: dict, nodes: tuple[str, ...] = ("virt-br100-00000",),
            devices: tuple[tuple[int, ...], ...] = ((0, 1),)) -> AttemptSpec:
    return AttemptSpec(job, aid, n, spec, "BR100", nodes, devices, 1000)


def test_cluster_specs(tmp_path: Path) -> None:
    c = virtual_cluster("3x8xBR100+2x4x910B")
    assert c.n_nodes == 5 and c.n_devices == 32 and all(n.name.startswith("virt-") for n in c.nodes)
    assert {n.accelerator for n in c.nodes} == {"BR100", "910B"}
    f = tmp_path / "c.yaml"
    f.write_text("name: t\npools:\n  - {name: a, accelerator: H100, count: 2, per_node: 8}\n")
    c2 = virtual_cluster(str(f))
    assert c2.n_devices == 16 and all(n.name.startswith("virt-") for n in c2.nodes)
    for bad in ("1250x8", "x8xBR100", "2x8xNOPE", "0x8xBR100"):
        with pytest.raises(SpecError, match="--virtual"):
            virtual_cluster(bad)


def test_runtime_of() -> None:
    assert runtime_of({}) == (DEFAULT_RUNTIME_S, 0)
    assert runtime_of({"expected_runtime": 90.0}) == (90.0, 0)
    assert runtime_of({"expected_runtime": 90.0, "simulate": {"duration": "15m", "exit_code": 3}}) == (900.0, 3)


def test_run_to_the_end_with_logs(tmp_path: Path) -> None:
    wall = Wall()
    ex = VirtualExecutor(virtual_cluster("2x8xBR100"), tmp_path, speed=10, wall=wall)
    h = ex.start(attempt(1, 1, 1, {"expected_runtime": 100}))
    assert ex.poll(h) == (False, None)
    wall.t += 9.9  # 99 virtual seconds
    assert ex.poll(h) == (False, None)
    wall.t += 0.2
    assert ex.poll(h) == (True, 0)
    log = ex.read_log(1, 1, 1).decode()
    assert "attempt 1 started on virt-br100-00000[0, 1]" in log and "exit 0 after 100s" in log
    h2 = ex.start(attempt(2, 2, 1, {"simulate": {"duration": 5, "exit_code": 7}}))
    wall.t += 1
    assert ex.poll(h2) == (True, 7)


def test_stop_keeps_work_and_resumes(tmp_path: Path) -> None:
    wall = Wall()
    ex = VirtualExecutor(virtual_cluster("1x8xBR100"), tmp_path, speed=1, wall=wall)
    h = ex.start(attempt(5, 1, 1, {"expected_runtime": 100}))
    wall.t += 40
    ex.stop(h, StopReason.PREEMPT)
    assert ex.poll(h) == (False, None)  # SIGTERM takes a (virtual) second
    wall.t += 1.5
    assert ex.poll(h) == (True, -15)
    assert ex.progress[5] == pytest.approx(41.0)
    h2 = ex.start(attempt(5, 2, 2, {"expected_runtime": 100}))
    wall.t += 58
    assert ex.poll(h2) == (False, None)
    wall.t += 2
    assert ex.poll(h2) == (True, 0) and 5 not in ex.progress
    h3 = ex.start(attempt(6, 3, 1, {"expected_runtime": 100}))
    ex.kill(h3)
    assert ex.poll(h3) == (True, -9)


def test_node_failure_and_checkpoints(tmp_path: Path) -> None:
    wall = Wall()
    fc = FailureConfig(enabled=False, checkpoint_s=30.0, script=((50.0, "node", 0, 100.0), (10.0, "device", 9, 20.0)))
    ex = VirtualExecutor(virtual_cluster("2x8xBR100"), tmp_path, speed=1, faults=fc, wall=wall)
    h = ex.start(attempt(1, 1, 1, {"expected_runtime": 1000}))
    assert len(ex.nodes()) == 2
    wall.t += 12
    nodes = {n.name: n for n in ex.nodes()}
    d = nodes["virt-br100-00001"].devices[1]
    assert d.health == DeviceHealth.UNHEALTHY and "virtual device failure" in (d.health_reason or "")
    wall.t += 50
    assert [n.name for n in ex.nodes()] == ["virt-br100-00001"]  # node 0 is down: not a member
    assert ex.poll(h) == (True, -9) and h.stopping == StopReason.NODE_LOST
    assert ex.progress[1] == 30.0  # it ran 50 s (until the node failed); checkpoints every 30 s
    with pytest.raises(RuntimeError, match="down"):
        ex.start(attempt(2, 2, 1, {}))
    wall.t += 100
    assert len(ex.nodes()) == 2 and all(d.health == DeviceHealth.HEALTHY for n in ex.nodes() for d in n.devices)
    kinds = [k for _, k, _, _ in ex.fault_log]
    assert kinds == ["device-failed", "device-repaired", "node-failed", "node-repaired"]


def test_random_faults_follow_the_rate(tmp_path: Path) -> None:
    wall = Wall()
    fc = FailureConfig(enabled=True, rate_per_device_hour=0.01, device_repair_s=1e9, node_repair_s=1e9, seed=3)
    ex = VirtualExecutor(virtual_cluster("100x8xBR100"), tmp_path, speed=1, faults=fc, wall=wall)
    wall.t += 3600 * 10  # 800 devices x 0.01/h x 10 h = 80 expected failures
    ex.nodes()
    n = len(ex.fault_log)
    assert 50 <= n <= 110
    assert len(ex.failed_nodes) + len(ex.failed_devices) <= n


def test_injected_faults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "faults.json"
    monkeypatch.setenv(FAULTS_FILE_ENV, str(f))
    ex = VirtualExecutor(virtual_cluster("2x8xBR100"), tmp_path / "dd", wall=Wall())
    assert all(d.health == DeviceHealth.HEALTHY for n in ex.nodes() for d in n.devices)
    set_fault(f, "virt-br100-00001", 3, "xid 79")
    bad = [(n.name, d.index, d.health_reason) for n in ex.nodes() for d in n.devices
           if d.health == DeviceHealth.UNHEALTHY]
    assert bad == [("virt-br100-00001", 3, "injected: xid 79")]


def test_restart_continues_the_timeline(tmp_path: Path) -> None:
    wall = Wall()
    c = virtual_cluster("1x8xBR100")
    ex = VirtualExecutor(c, tmp_path, speed=2, wall=wall)
    h1 = ex.start(attempt(1, 1, 1, {"expected_runtime": 100}))
    h2 = ex.start(attempt(2, 2, 1, {"expected_runtime": 20}))
    recs = [AttemptRecord(h.job_id, h.attempt_id, h.n, ("virt-br100-00000",), ((0, 1),), 1000, {},
                          h.record()[0], None) for h in (h1, h2)]
    recs.append(AttemptRecord(3, 3, 1, ("virt-br100-00000",), ((2,),), 1000, {}, None, None))
    wall.t += 20  # the controller is down for 40 virtual seconds
    ex2 = VirtualExecutor(c, tmp_path, speed=2, wall=wall)  # a new process: the epoch is read back
    got = ex2.adopt(recs)
    assert got[1].verdict == AdoptVerdict.ADOPTED and got[1].alive
    assert got[2].verdict == AdoptVerdict.ADOPTED and not got[2].alive
    assert got[3].verdict == AdoptVerdict.NOT_STARTED
    assert ex2.poll(got[2].handle) == (True, 0)  # ended while the controller was down: its code is known
    wall.t += 25
    assert ex2.poll(got[1].handle) == (False, None)
    wall.t += 6
    assert ex2.poll(got[1].handle) == (True, 0)


def test_acts_as_of_the_controllers_tick(tmp_path: Path) -> None:
    """Within a tick, starts and ends are stamped with the tick's instant, not with when the call happened: a
    process started late in a tick began at the tick, an end is seen only by a tick at or after it."""
    wall = Wall()
    ex = VirtualExecutor(virtual_cluster("2x8xBR100"), tmp_path, speed=10, wall=wall)
    tick = wall.t
    ex.at_tick(tick)
    wall.t += 0.5  # the tick's store writes took 0.5 s of wall (5 virtual seconds)
    h = ex.start(attempt(1, 1, 1, {"expected_runtime": 100}))
    assert h.vstart == ex.clock.at(tick)  # started at the tick, as the store's started_at says
    wall.t = tick + 10.2  # the clock is past the end (102 virtual s) ...
    ex.at_tick(tick + 9.9)  # ... but this tick began before it: not ended yet
    assert ex.poll(h) == (False, None)
    ex.at_tick(tick + 10.0)  # the first tick at or after the end sees it
    assert ex.poll(h) == (True, 0)
    # the controller's shutdown polls (no ticks any more) live on the clock again
    h2 = ex.start(attempt(2, 2, 1, {"expected_runtime": 1000}, devices=((2,),)))
    ex.stop(h2, StopReason.SHUTDOWN)
    wall.t += 1.0
    assert ex.poll(h2) == (True, -15)


def test_due_names_exactly_the_handles_that_poll_would_find_ended(tmp_path: Path) -> None:
    """The controller polls only what ``due`` names (8,000 running handles polled every tick were a fifth of the
    controller's CPU at 10k chips): at every step, every handle that ``poll`` finds ended must have been named -
    runs to its end, a stop's grace, a kill, a node failure - and handles far from their end are not named."""
    import random

    wall = Wall()
    fc = FailureConfig(enabled=False, checkpoint_s=30.0, script=((500.0, "node", 1, 50.0),))
    ex = VirtualExecutor(virtual_cluster("4x8xBR100"), tmp_path, speed=1, faults=fc, wall=wall, write_logs=False)
    rng = random.Random(3)
    live: dict[int, object] = {}
    named_early = 0
    for jid in range(1, 400):
        if rng.random() < 0.5 or not live:
            node = f"virt-br100-{rng.randrange(4):05d}"
            with contextlib.suppress(RuntimeError):  # its node is down
                live[jid] = ex.start(attempt(jid, jid, 1, {"expected_runtime": rng.uniform(1, 300)}, nodes=(node,),
                                             devices=((0,),)))
        elif rng.random() < 0.3:
            h = live[rng.choice(list(live))]
            (ex.kill if rng.random() < 0.3 else lambda x: ex.stop(x, StopReason.PREEMPT))(h)
        wall.t += rng.uniform(0, 6)
        ex.nodes()  # faults advance here, as the controller's membership check does
        ex.at_tick(wall.t)
        named = set(ex.due(live))
        for j, h in list(live.items()):
            done, _ = ex.poll(h)
            if done:
                assert j in named, (j, wall.t)
                del live[j]
            elif j in named:
                named_early += 1
    assert any(k == "node-failed" for _, k, _, _ in ex.fault_log)
    assert named_early < 50  # only the node failure's sweep names handles that have not ended
