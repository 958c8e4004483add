"""Usage records add up: the chip-time of every ended attempt is recorded once, with its outcome, in the same
transaction as the attempt's end (retries, preemption, cancel, node loss, a crash and a stale writer included)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from suanli.control import db, usage
from suanli.control.store import Conflict, Step, Store
from suanli.control.types import AttemptOutcome as O
from suanli.control.types import StopReason
from suanli.workload.spec import JobSpec
from suanli.workload.states import JobState as S

PLACEMENTS = [
    {"nodes": ["n1"], "local": [[0, 1, 2, 3]], "milli": 1000, "model": "H100"},
    {"nodes": ["n1", "n2"], "local": [[0, 1], [0, 1, 2]], "milli": 1000, "model": "H100"},
    {"nodes": ["n3"], "local": [[5]], "milli": 250, "model": "910B"},
    {"nodes": ["c1"], "local": [[]], "milli": 1000, "model": ""},  # CPU only: no chips, no record
]


def chips(pl: dict[str, Any]) -> float:
    return sum(len(x) for x in pl["local"]) * pl["milli"] / 1000


def open_store(url: str) -> Store:
    s = Store.open(url)
    s.ensure_defaults()
    return s


def implied_chip_s(store: Store) -> tuple[float, int]:
    """Chip-seconds the ended attempts imply, and how many records they should have."""
    with store.read() as c:
        rows = c.execute(sa.select(db.job_attempts).where(db.job_attempts.c.ended_at.is_not(None))).all()
    total, n = 0.0, 0
    for a in rows:
        pl = a.placement if isinstance(a.placement, dict) else json.loads(a.placement)
        total += chips(pl) * (a.ended_at - a.started_at)
        n += sum(1 for loc in pl["local"] if loc)
    return total, n


def check_adds_up(store: Store) -> None:
    recs = store.usage_records()
    want, n = implied_chip_s(store)
    assert len(recs) == n
    assert sum(r["chip_s"] for r in recs) == pytest.approx(want, rel=1e-9, abs=1e-6)
    assert len({(r["attempt_id"], r["node"]) for r in recs}) == len(recs)
    for r in recs:
        assert r["useful_chip_s"] + r["lost_chip_s"] == pytest.approx(r["chip_s"], abs=1e-6)
        assert r["lost_chip_s"] >= -1e-9 and r["useful_chip_s"] >= -1e-9
    with store.read() as c:  # no record of an attempt still running
        open_ids = set(c.execute(sa.select(db.job_attempts.c.id).where(db.job_attempts.c.ended_at.is_(None)))
                       .scalars())
    assert not open_ids & {r["attempt_id"] for r in recs}


class Sim:
    """Drives the store as the reconcile loop does, with a hand-moved clock."""

    def __init__(self, store: Store) -> None:
        self.s = store
        self.now = 1_000_000.0
        self.jobs: dict[int, dict[str, Any]] = {}

    def submit(self, max_retries: int = 2, llm: str | None = None) -> int:
        j = self.s.submit(JobSpec.model_validate({"name": "j", "command": ["true"], "max_retries": max_retries,
                                                  **({"llm": llm} if llm else {})}))
        self.jobs[j["id"]] = {"state": S.PENDING, "attempt": None, "failures": 0, "max": max_retries}
        return int(j["id"])

    def start(self, jid: int, pl: dict[str, Any]) -> None:
        j = self.jobs[jid]
        aid, _ = self.s.begin_attempt(jid, self.now, pl, "test")
        j.update(state=S.RUNNING, attempt=aid)

    def end(self, jid: int, how: str, lost_s: float = 0.0) -> None:
        j = self.jobs[jid]
        aid = j["attempt"]
        if how == "succeeded":
            self.s.finish_attempt(jid, aid, self.now, O.SUCCEEDED, 0, None, [Step(S.RUNNING, S.SUCCEEDED, "ok")])
            j["state"] = S.SUCCEEDED
        elif how == "failed":
            j["failures"] += 1
            dst = S.REQUEUED if j["failures"] <= j["max"] else S.FAILED
            self.s.finish_attempt(jid, aid, self.now, O.FAILED, 1, None,
                                  [Step(S.RUNNING, dst, "exit 1", {"failures": j["failures"]})])
            j["state"] = dst
        elif how == "preempted":
            self.s.finish_attempt(jid, aid, self.now, O.PREEMPTED, None, StopReason.PREEMPT,
                                  [Step(S.RUNNING, S.PREEMPTED, "p"), Step(S.PREEMPTED, S.REQUEUED, "q")])
            j["state"] = S.REQUEUED
        elif how == "cancelled":
            self.s.finish_attempt(jid, aid, self.now, O.CANCELLED, None, StopReason.CANCEL,
                                  [Step(S.RUNNING, S.CANCELLED, "c")])
            j["state"] = S.CANCELLED
        elif how == "node-lost":
            self.s.finish_attempt(jid, aid, self.now, O.NODE_LOST, None, StopReason.NODE_LOST,
                                  [Step(S.RUNNING, S.REQUEUED, "n")], lost_device_s=lost_s)
            j["state"] = S.REQUEUED
        elif how == "crash-lost":  # restart found nothing of it (or a partial gang): requeued, no failure
            self.s.requeue_lost(jid, aid, self.now, "lost after restart")
            j["state"] = S.REQUEUED
        elif how == "spawn-failed":
            self.s.spawn_failed(jid, aid, self.now, "no such file")
            j["state"] = S.FAILED
        else:
            raise AssertionError(how)


ENDS = ["succeeded", "failed", "preempted", "cancelled", "node-lost", "crash-lost", "spawn-failed"]


@pytest.fixture(scope="module")
def sqlite_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("usage")


_n = [0]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from(ENDS), st.integers(0, 3),
                          st.floats(0.0, 7200.0, allow_nan=False), st.floats(0.0, 1.0), st.booleans()),
                min_size=1, max_size=25))
def test_usage_adds_up_over_random_event_sequences(sqlite_dir: Path, events: list[Any]) -> None:
    """Random sequences of starts and ends over 4 jobs; a crash of the writer inside an end (the transaction rolls
    back: nothing recorded, the attempt still open) and a stale second end (refused) never count twice."""
    _n[0] += 1
    store = open_store(db.sqlite_url(sqlite_dir / f"h{_n[0]}.db"))
    try:
        sim = Sim(store)
        ids = [sim.submit(max_retries=2) for _ in range(4)]
        real_records = usage.records
        for k, how, p, dt, frac, crash in events:
            jid = ids[k]
            j = sim.jobs[jid]
            sim.now += dt
            if j["state"] in (S.PENDING, S.REQUEUED):
                sim.start(jid, PLACEMENTS[p])
                continue
            if j["state"] != S.RUNNING:
                continue
            if crash:  # the writer dies inside the end's transaction: rolled back, recorded later once
                def boom(**kw: Any) -> Any:
                    raise RuntimeError("killed mid-transaction")
                usage.records = boom  # type: ignore[assignment]
                try:
                    with pytest.raises(RuntimeError):
                        sim.end(jid, how, frac * 3 * 7200.0)
                finally:
                    usage.records = real_records  # type: ignore[assignment]
                j["state"] = S.RUNNING
                if how == "failed":
                    j["failures"] -= 1
                check_adds_up(store)
            aid = j["attempt"]
            sim.end(jid, how, frac * 3 * 7200.0)
            if how == "succeeded":  # a stale writer (a controller that lost its lock) ends it again: refused
                with pytest.raises(Conflict):
                    store.finish_attempt(jid, aid, sim.now + 1, O.SUCCEEDED, 0, None,
                                         [Step(S.RUNNING, S.SUCCEEDED, "again")])
        check_adds_up(store)
    finally:
        store.close()


def test_outcomes_split_useful_and_lost(tmp_path: Path) -> None:
    store = open_store(db.sqlite_url(tmp_path / "s.db"))
    sim = Sim(store)
    pl = PLACEMENTS[1]  # 2 chips on n1, 3 on n2
    cases = {"succeeded": (5 * 3600, 0), "preempted": (5 * 3600, 0), "failed": (0, 5 * 3600),
             "cancelled": (0, 5 * 3600), "node-lost": (5 * 3600 - 1800, 1800)}
    for how, (useful, lost) in cases.items():
        jid = sim.submit(max_retries=0)
        sim.start(jid, pl)
        sim.now += 3600
        sim.end(jid, how, lost_s=1800)
        recs = store.usage_records(jid)
        assert [r["node"] for r in recs] == ["n1", "n2"] and [r["chips"] for r in recs] == [2, 3]
        assert all(r["outcome"] == how for r in recs)
        assert sum(r["useful_chip_s"] for r in recs) == pytest.approx(useful), how
        assert sum(r["lost_chip_s"] for r in recs) == pytest.approx(lost), how
        # node-lost: the lost work is shared by the nodes in proportion to their chips
        if how == "node-lost":
            assert [r["lost_chip_s"] for r in recs] == pytest.approx([720, 1080])
    check_adds_up(store)
    from suanli.control.check import check_store

    assert check_store(store.engine).ok  # the store check agrees ...
    with store.write() as c:  # ... and catches a record that no longer matches its attempt
        c.execute(db.usage.update().where(db.usage.c.id == 1).values(chip_s=1.0))
    r = check_store(store.engine)
    assert r.problems == ["job 1 attempt 1: usage 10801.000 chip-seconds, the attempt implies 18000.000"]
    store.close()


def test_postgresql_records_in_the_same_transaction(tmp_path: Path) -> None:
    from test_control_store import pg_url_or_skip

    store = open_store(pg_url_or_skip())
    try:
        sim = Sim(store)
        a, b = sim.submit(max_retries=1), sim.submit()
        sim.start(a, PLACEMENTS[0])
        sim.start(b, PLACEMENTS[2])
        sim.now += 100
        sim.end(a, "failed")
        sim.now += 50
        sim.start(a, PLACEMENTS[1])
        sim.now += 10
        sim.end(a, "node-lost", 5.0)
        sim.end(b, "preempted")
        sim.start(a, PLACEMENTS[0])
        sim.now += 1
        with pytest.raises(RuntimeError):  # an error inside the transaction: neither state nor usage written
            real = usage.records

            def boom(**kw: Any) -> Any:
                raise RuntimeError("x")
            usage.records = boom  # type: ignore[assignment]
            try:
                sim.end(a, "succeeded")
            finally:
                usage.records = real  # type: ignore[assignment]
        assert store.get_job(a)["state"] == "running"
        sim.end(a, "succeeded")
        check_adds_up(store)
        assert sum(r["chip_s"] for r in store.usage_records()) == pytest.approx(4 * 100 + 5 * 10 + 0.25 * 160 + 4)
    finally:
        store.close()


def test_migration_derives_records_of_attempts_ended_before_it(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config

    url = db.sqlite_url(tmp_path / "old.db")
    store = open_store(url)
    sim = Sim(store)
    jid = sim.submit()
    sim.start(jid, PLACEMENTS[0])
    sim.now += 60
    sim.end(jid, "succeeded")
    j2 = sim.submit(llm="qwen2.5-7b")
    sim.start(j2, PLACEMENTS[0])
    sim.now += 30
    sim.end(j2, "succeeded")
    eng = store.engine
    cfg = Config()
    cfg.set_main_option("script_location", str(db.MIGRATIONS))
    with eng.connect().execution_options(write=True) as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0005")
        conn.commit()
    with eng.connect().execution_options(write=True) as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        conn.commit()
    recs = store.usage_records()
    assert len(recs) == 2 and recs[0]["chip_s"] == pytest.approx(240) and recs[0]["outcome"] == "succeeded"
    assert [r["llm"] for r in recs] == ["", "qwen2.5-7b"]  # migration 0009 fills the LLM from the job's spec
    store.close()
