"""The controller's batched store writes: a pass's starts in one transaction (Store.begin_attempts), the attempts
that ended in a tick in one (Store.finish_attempts). All of a batch is recorded or none of it; what each records
equals the one-at-a-time methods."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from suanli.control import db
from suanli.control.store import Conflict, Step, Store
from suanli.control.types import AttemptOutcome, StopReason
from suanli.workload.spec import JobSpec
from suanli.workload.states import JobState
from test_control_store import pg_url_or_skip

S = JobState
PL = {"nodes": ["n0"], "local": [[0]], "milli": 1000, "cpu_milli": [0], "mem_mib": [0], "model": "H100"}


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    url = db.sqlite_url(tmp_path / "s.db") if request.param == "sqlite" else pg_url_or_skip()
    s = Store.open(url)
    s.ensure_defaults()
    yield s
    s.close()


def jobs(store: Store, n: int) -> list[int]:
    return [j["id"] for j in store.submit_many([JobSpec.model_validate({"name": f"j{i}", "command": ["true"]})
                                               for i in range(n)])]


def states(store: Store, ids: list[int]) -> list[str]:
    return [store.get_job(i)["state"] for i in ids]


def counts(store: Store) -> tuple[int, int, int]:
    with store.read() as c:
        return tuple(int(c.execute(sa.select(sa.func.count()).select_from(t)).scalar() or 0)  # type: ignore[return-value]
                     for t in (db.job_attempts, db.job_events, db.usage))


def test_begin_attempts_records_all_in_order_and_numbers_attempts(store: Store) -> None:
    ids = jobs(store, 3)
    recs = store.begin_attempts([(i, {**PL, "local": [[k]]}, f"n0 devices [[{k}]]") for k, i in enumerate(ids)], 10.0)
    assert [n for _, n in recs] == [1, 1, 1] and len({a for a, _ in recs}) == 3
    assert states(store, ids) == ["running"] * 3
    for (_aid, _), i, k in zip(recs, ids, range(3), strict=True):
        j = store.get_job(i)
        assert j["attempts"] == 1 and j["attempt_list"][0]["placement"]["local"] == [[k]]
        assert store.events(i)[-1]["message"] == f"attempt 1 on n0 devices [[{k}]]"
    store.record_spawned_many([(a, [[1, 2]], 7) for a, _ in recs])
    assert all(store.get_job(i)["attempt_list"][0]["procs"] == [[1, 2]] for i in ids)


def test_begin_attempts_is_all_or_nothing(store: Store) -> None:
    ids = jobs(store, 3)
    store.begin_attempt(ids[1], 1.0, PL, "n0")  # already running: it cannot start again
    before = counts(store)
    with pytest.raises(Exception):  # noqa: B017 - InvalidTransition (running -> running)
        store.begin_attempts([(i, PL, "n0") for i in ids], 2.0)
    assert counts(store) == before and states(store, ids) == ["pending", "running", "pending"]
    with pytest.raises(ValueError):
        store.begin_attempts([(ids[0], PL, "n0"), (ids[0], PL, "n0")], 2.0)


def test_finish_attempts_records_each_outcome_like_one_at_a_time(store: Store) -> None:
    ids = jobs(store, 4)
    recs = store.begin_attempts([(i, PL, "n0") for i in ids], 10.0)
    items = [
        (ids[0], recs[0][0], AttemptOutcome.SUCCEEDED, 0, None, [Step(S.RUNNING, S.SUCCEEDED, "exit 0",
                                                                       {"exit_code": 0})], None, None),
        (ids[1], recs[1][0], AttemptOutcome.FAILED, 3, None,
         [Step(S.RUNNING, S.REQUEUED, "exit 3; retry", {"exit_code": 3, "failures": 1, "not_before": 99.0})], None,
         None),
        (ids[2], recs[2][0], AttemptOutcome.PREEMPTED, -15, StopReason.PREEMPT,
         [Step(S.RUNNING, S.PREEMPTED, "preempted"), Step(S.PREEMPTED, S.REQUEUED, "back in the queue")], None, None),
        (ids[3], recs[3][0], AttemptOutcome.NODE_LOST, -9, StopReason.NODE_LOST,
         [Step(S.RUNNING, S.REQUEUED, "node lost")], 5.0, None),
    ]
    store.finish_attempts(items, 20.0)
    assert states(store, ids) == ["succeeded", "requeued", "requeued", "requeued"]
    j1 = store.get_job(ids[1])
    assert j1["failures"] == 1 and j1["not_before"] == 99.0 and j1["exit_code"] == 3
    assert [e["kind"] for e in store.events(ids[2])][-2:] == ["preempted", "requeued"]
    for i, (_aid, _), it in zip(ids, recs, items, strict=True):
        a = store.get_job(i)["attempt_list"][0]
        assert a["ended_at"] == 20.0 and a["outcome"] == it[2] and a["exit_code"] == it[3]
        assert a["stop_reason"] == it[4] and a["lost_device_s"] == it[6]
    usage = store.usage_records()
    assert sorted(u["attempt_id"] for u in usage) == sorted(a for a, _ in recs)
    lost = next(u for u in usage if u["attempt_id"] == recs[3][0])
    assert lost["chip_s"] == 10.0 and lost["lost_chip_s"] == 5.0


def test_finish_attempts_is_all_or_nothing(store: Store) -> None:
    ids = jobs(store, 2)
    recs = store.begin_attempts([(i, PL, "n0") for i in ids], 10.0)
    ok = (ids[0], recs[0][0], AttemptOutcome.SUCCEEDED, 0, None, [Step(S.RUNNING, S.SUCCEEDED, "exit 0")], None,
          None)
    wrong = (ids[1], recs[1][0], AttemptOutcome.SUCCEEDED, 0, None, [Step(S.PREEMPTED, S.REQUEUED, "x")], None, None)
    before = counts(store)
    with pytest.raises(Conflict):
        store.finish_attempts([ok, wrong], 20.0)
    assert counts(store) == before and states(store, ids) == ["running", "running"]
