"""The KPA-style autoscaler: stable and panic windows, bounds, scale to zero (pure, on a fake clock)."""

from __future__ import annotations

import pytest

from suanli.control.autoscale import AutoscalePolicy, Autoscaler


def run(a: Autoscaler, t0: float, t1: float, load: float, ready: int, dt: float = 0.5) -> list[int]:
    out = []
    t = t0
    cur = a.desired if a.desired is not None else ready
    while t < t1:
        a.observe(t, load)
        cur = a.decide(t, ready, cur).desired
        out.append(cur)
        t += dt
    return out


def test_a_step_panics_out_at_once_and_scales_in_one_stable_window_after_the_load() -> None:
    a = Autoscaler(AutoscalePolicy(min_replicas=1, max_replicas=10, target_ongoing_requests=2,
                                   stable_window_s=20, panic_window_s=2))
    assert run(a, 0, 30, load=1, ready=1)[-1] == 1
    step = run(a, 30, 33, load=16, ready=1)
    # panic from the first sample on; the full 8 replicas (16 / 2) once the 2 s panic window holds only the step
    assert step[0] >= 2 and step[1] > step[0]
    assert step.index(8) <= 4
    assert a.panic_until is not None
    held = run(a, 33, 60, load=16, ready=8)
    assert min(held) == 8
    # load gone: still 8 while the stable average is high, back to min within a stable window (+ panic hold)
    down = run(a, 60, 100, load=0, ready=8)
    assert down[0] == 8
    assert down[-1] == 1
    first_min = 60 + 0.5 * down.index(1)
    assert first_min <= 60 + 20 + 0.5


def test_no_flapping_on_a_short_dip() -> None:
    a = Autoscaler(AutoscalePolicy(min_replicas=1, max_replicas=10, target_ongoing_requests=2,
                                   stable_window_s=20, panic_window_s=2))
    run(a, 0, 30, load=8, ready=4)
    dip = run(a, 30, 32, load=0, ready=4)
    assert min(dip) >= 3


def test_slow_growth_follows_the_stable_average_without_panic() -> None:
    a = Autoscaler(AutoscalePolicy(min_replicas=1, max_replicas=10, target_ongoing_requests=2,
                                   stable_window_s=10, panic_window_s=2))
    run(a, 0, 20, load=4, ready=2)
    assert a.panic_until is None and a.desired == 2
    run(a, 20, 40, load=6, ready=2)  # 3 wanted of 2 ready: below the 2x panic threshold
    assert a.panic_until is None and a.desired == 3


def test_bounds_and_scale_to_zero() -> None:
    a = Autoscaler(AutoscalePolicy(min_replicas=0, max_replicas=3, target_ongoing_requests=1,
                                   stable_window_s=4, panic_window_s=1))
    assert run(a, 0, 10, load=0, ready=0)[-1] == 0
    # one request arrives at a service at zero: one replica at once
    assert run(a, 10, 10.5, load=1, ready=0) == [1]
    assert max(run(a, 10.5, 20, load=50, ready=1)) == 3
    assert run(a, 20, 40, load=0, ready=3)[-1] == 0


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="min"):
        AutoscalePolicy(min_replicas=3, max_replicas=2)
    with pytest.raises(ValueError, match="target"):
        AutoscalePolicy(target_ongoing_requests=0)
    with pytest.raises(ValueError, match="panic_window"):
        AutoscalePolicy(stable_window_s=5, panic_window_s=10)


def test_replicas_are_reached_at_their_nodes_address() -> None:
    from suanli.control.services import ServiceManager

    class FakeStore:
        def __init__(self) -> None:
            self.rows = [{"id": 1, "name": "s", "tenant": "t", "model": "m", "generation": 1, "min": 1, "max": 1,
                          "desired": 1, "spec": {"name": "s", "command": ["x"]}}]
            self.reps = [{"service_id": 1, "job_id": 7, "idx": 0, "port": 9000, "generation": 1,
                          "state": "running", "cancel_requested": False, "node": "n2"}]

    st = FakeStore()
    addresses = {"n2": "10.0.0.2"}
    m = ServiceManager(st, address_of=addresses.get)
    m._sync(st.rows, st.reps, 0.0)
    rep = m.services["s"].replicas[7]
    assert rep.url == "http://10.0.0.2:9000"
    rep.ready = True
    addresses.clear()  # membership not known for a moment: the replica keeps its address and readiness
    m._sync(st.rows, st.reps, 1.0)
    assert rep.url == "http://10.0.0.2:9000" and rep.ready
    addresses["n3"] = "10.0.0.3"
    st.reps[0]["node"] = "n3"  # restarted on another node: new address, probed again before it gets requests
    m._sync(st.rows, st.reps, 2.0)
    assert rep.url == "http://10.0.0.3:9000" and not rep.ready
