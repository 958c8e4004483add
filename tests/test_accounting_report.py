"""The accounting report of a known synthetic month, checked against figures computed by hand; the CLI's formats,
plots and one-line errors; the API route; the Prometheus counters."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from suanli.accounting.pricing import Accounting
from suanli.api.app import create_app
from suanli.cli.main import app as cli
from suanli.control import db
from suanli.control.store import Step, Store
from suanli.control.types import AttemptOutcome as O
from suanli.control.types import StopReason
from suanli.control.usage import make_report
from suanli.workload.spec import JobSpec
from suanli.workload.states import JobState as S

H = 3600.0
DAY = 86400.0
T0 = 1_700_000_000.0  # the month starts here
T1 = T0 + 30 * DAY

FLEET = """
name: lab
accounting: {usd_per_kwh: 0.10, busy: 0.6, idle_power_frac: 0.3, amortisation_years: 4, utilisation: 0.8}
pools:
  - {name: h100, count: 2, accelerator: H100, per_node: 8, pue: 1.2, price_usd: 35040, node_hour_usd: 8.0}
  - {name: ascend, count: 1, accelerator: 910B, per_node: 8, pue: 1.5}
  - {name: br, count: 1, accelerator: BR100, per_node: 8}
"""

# Hand-computed rates (see the fleet file above):
# H100: 35,040 / (4 y x 8,760 h x 0.8) = 1.25 $/chip-h; board power 700 W x (0.3 + 0.7 x 0.6) = 504 W, x PUE 1.2
#       = 0.6048 kWh per chip-hour = 0.06048 $; overhead 8 $/node-hour / 8 chips = 1 $ -> 2.31048 $/chip-h
# 910B: catalog 12,500 / 28,032 $/chip-h; 350 W x 0.72 x PUE 1.5 = 0.378 kWh/chip-h = 0.0378 $
# BR100: 550 W x 0.72 x default PUE 1.3 = 0.5148 kWh/chip-h; no price anywhere -> cost unknown
H100_KWH, H100_USD = 0.6048, 2.31048
ASC_KWH, ASC_USD = 0.378, 12500 / 28032 + 0.0378
BR_KWH = 0.5148


def node(name: str, model: str, n: int = 8) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return ({"name": name, "accelerator": model, "devices": n, "cpu_milli": 64000, "memory_mib": 1 << 20,
             "domain": name, "rack": "r", "declared": True},
            [{"local_index": i, "model": model, "uuid": None, "memory_mib": None, "declared": True} for i in range(n)])


def attempt(store: Store, jid: int, start: float, end: float, pl: dict[str, Any], how: str,
            lost_s: float | None = None, retry: bool = False) -> None:
    aid, _ = store.begin_attempt(jid, start, pl, "t")
    if how == "succeeded":
        store.finish_attempt(jid, aid, end, O.SUCCEEDED, 0, None, [Step(S.RUNNING, S.SUCCEEDED, "ok")])
    elif how == "failed":
        store.finish_attempt(jid, aid, end, O.FAILED, 1, None,
                             [Step(S.RUNNING, S.REQUEUED if retry else S.FAILED, "exit 1", {"failures": 1})])
    elif how == "node-lost":
        store.finish_attempt(jid, aid, end, O.NODE_LOST, None, StopReason.NODE_LOST,
                             [Step(S.RUNNING, S.REQUEUED, "lost")], lost_device_s=lost_s)


def pl(nodename: str, model: str, n: int) -> dict[str, Any]:
    return {"nodes": [nodename], "local": [list(range(n))], "milli": 1000, "model": model}


@pytest.fixture
def month(tmp_path: Path) -> tuple[Store, str, Path]:
    url = db.sqlite_url(tmp_path / "m.db")
    store = Store.open(url)
    store.ensure_defaults()
    for t in ("nlp", "vision"):
        store.create_tenant(t)
    for n, m in (("h100-0000", "H100"), ("h100-0001", "H100"), ("ascend-0000", "910B"), ("br-0000", "BR100")):
        store.upsert_node(*node(n, m))

    def job(tenant: str, name: str, retries: int = 0) -> int:
        sp = JobSpec.model_validate({"name": name, "command": ["true"], "tenant": tenant, "max_retries": retries})
        return int(store.submit(sp)["id"])

    # nlp: 8 x H100 for 10 h, succeeded: 80 useful chip-hours
    attempt(store, job("nlp", "pretrain"), T0 + DAY, T0 + DAY + 10 * H, pl("h100-0000", "H100", 8), "succeeded")
    # vision: 4 x 910B fails after 5 h (20 chip-hours lost, failed), the retry succeeds in 5 h (20 useful)
    j2 = job("vision", "detector", retries=1)
    attempt(store, j2, T0 + 2 * DAY, T0 + 2 * DAY + 5 * H, pl("ascend-0000", "910B", 4), "failed", retry=True)
    attempt(store, j2, T0 + 3 * DAY, T0 + 3 * DAY + 5 * H, pl("ascend-0000", "910B", 4), "succeeded")
    # nlp: 2 x H100, node lost after 3 h, 1 h since the last checkpoint: 2 chip-hours lost, 4 useful
    attempt(store, job("nlp", "sft"), T0 + 4 * DAY, T0 + 4 * DAY + 3 * H, pl("h100-0001", "H100", 2), "node-lost",
            lost_s=2 * H)
    # vision: 1 x BR100 for 2 h: price unknown
    attempt(store, job("vision", "embed"), T0 + 5 * DAY, T0 + 5 * DAY + 2 * H, pl("br-0000", "BR100", 1),
            "succeeded")
    # nlp: 8 x H100 from 10 h before the month to 10 h into it: 80 of its 160 chip-hours fall inside
    attempt(store, job("nlp", "straddle"), T0 - 10 * H, T0 + 10 * H, pl("h100-0001", "H100", 8), "succeeded")
    # after the month: not counted
    attempt(store, job("nlp", "later"), T1 + H, T1 + 2 * H, pl("h100-0000", "H100", 8), "succeeded")
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET)
    yield store, url, fleet
    store.close()


def by(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    return {r[key]: r for r in rows}


def test_synthetic_month_matches_hand_computed_figures(month: tuple[Store, str, Path]) -> None:
    store, _, fleet = month
    acct = Accounting.from_file(fleet)
    t = by(make_report(store, since=T0, until=T1, by=("tenant",), acct=acct)["rows"], "tenant")
    assert set(t) == {"nlp", "vision"}
    nlp, vis = t["nlp"], t["vision"]
    assert nlp["chip_hours"] == pytest.approx(80 + 6 + 80)
    assert nlp["useful_chip_hours"] == pytest.approx(80 + 4 + 80)
    assert nlp["lost_chip_hours"] == pytest.approx(2) and nlp["lost_by_cause"] == pytest.approx({"node-lost": 2})
    assert nlp["goodput"] == pytest.approx(164 / 166)
    assert nlp["energy_kwh"] == pytest.approx(166 * H100_KWH)
    assert nlp["usd"] == pytest.approx(166 * H100_USD)
    assert nlp["usd_per_useful_chip_hour"] == pytest.approx(166 * H100_USD / 164)
    assert vis["chip_hours"] == pytest.approx(42) and vis["useful_chip_hours"] == pytest.approx(22)
    assert vis["lost_by_cause"] == pytest.approx({"failed": 20})
    assert vis["energy_kwh"] == pytest.approx(40 * ASC_KWH + 2 * BR_KWH)
    assert vis["usd"] is None  # BR100 has no price: unknown, never zero
    m = by(make_report(store, since=T0, until=T1, by=("model",), acct=acct)["rows"], "model")
    assert m["H100"]["usd"] == pytest.approx(166 * H100_USD)
    assert m["910B"]["usd"] == pytest.approx(40 * ASC_USD)
    assert m["BR100"]["usd"] is None and m["BR100"]["energy_kwh"] == pytest.approx(2 * BR_KWH)
    assert m["H100"]["utilisation"] == pytest.approx(166 / (16 * 720))
    assert m["910B"]["utilisation"] == pytest.approx(40 / (8 * 720))
    rep = make_report(store, since=T0, until=T1, by=(), acct=acct)
    assert len(rep["rows"]) == 1 and rep["rows"][0]["chip_hours"] == pytest.approx(208)
    assert rep["total"]["utilisation"] == pytest.approx(208 / (32 * 720))
    # without the fleet file: catalog price for H100 (30,000), default PUE 1.3, no overhead
    d = by(make_report(store, since=T0, until=T1, by=("model",))["rows"], "model")
    assert d["H100"]["usd"] == pytest.approx(166 * (30000 / 28032 + 0.504 * 1.3 * 0.1))
    j = make_report(store, since=T0, until=T1, by=("tenant", "job"), acct=acct)["rows"]
    assert {(r["tenant"], r["job_name"]) for r in j} == {("nlp", "pretrain"), ("nlp", "sft"), ("nlp", "straddle"),
                                                         ("vision", "detector"), ("vision", "embed")}


def test_cli_formats_and_plots(month: tuple[Store, str, Path], tmp_path: Path) -> None:
    _, url, fleet = month
    run = CliRunner()
    args = ["report", "--db", url, "--fleet", str(fleet), "--since", "2023-11-14T22:13:20", "--until",
            "2023-12-14T22:13:20"]
    r = run.invoke(cli, [*args, "--by", "tenant", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert isinstance(rows, list) and [x["tenant"] for x in rows] == ["nlp", "vision"]
    for x in rows:
        assert {"tenant", "chip_hours", "useful_chip_hours", "lost_chip_hours", "energy_kwh", "usd"} <= set(x)
        assert "model" not in x and "node" not in x
    assert rows[0]["chip_hours"] == pytest.approx(166) and rows[1]["usd"] is None
    r = run.invoke(cli, [*args, "--by", "model", "--format", "csv"])
    assert r.exit_code == 0, r.output
    got = {x["model"]: x for x in csv.DictReader(io.StringIO(r.output))}
    assert float(got["910B"]["lost_failed_chip_hours"]) == pytest.approx(20) and got["BR100"]["usd"] == ""
    r = run.invoke(cli, [*args, "--by", "node", "--format", "markdown"])
    assert r.exit_code == 0 and r.output.startswith("| node | chip_hours |") and "ascend-0000" in r.output
    out = tmp_path / "rep"
    r = run.invoke(cli, [*args, "--by", "tenant", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "nlp" in r.output and "166.00" in r.output
    for f in ("usage.json", "usage.csv", "usage.md", "usage_by_tenant.png", "cost_by_model.png"):
        assert (out / f).stat().st_size > 100, f
    saved = json.loads((out / "usage.json").read_text())
    assert saved["by"] == ["tenant"] and saved["rows"] == rows
    assert {r["model"] for r in saved["by_model"]} == {"H100", "910B", "BR100"}
    # by job: every job in CSV (the same columns as the other groupings), the N largest with --top
    r = run.invoke(cli, [*args, "--by", "job", "--format", "csv"])
    assert r.exit_code == 0, r.output
    jobs = list(csv.DictReader(io.StringIO(r.output)))
    assert len(jobs) == 5 and {"job", "job_name", "chip_hours", "lost_failed_chip_hours", "tokens"} <= set(jobs[0])
    assert {x["job_name"]: float(x["chip_hours"]) for x in jobs} == pytest.approx(
        {"pretrain": 80, "detector": 40, "sft": 6, "embed": 2, "straddle": 80})
    r = run.invoke(cli, [*args, "--by", "job", "--top", "2", "--json"])
    assert r.exit_code == 0, r.output
    assert [x["job_name"] for x in json.loads(r.stdout)] in (["pretrain", "straddle"], ["straddle", "pretrain"])
    assert "the 2 of 5 rows with the most chip-hours" in " ".join(r.stderr.split())


@pytest.mark.parametrize(("args", "msg"), [
    (["--since", "30x"], "--since: '30x' is not a duration"),
    (["--since", "yesterday"], "--since: 'yesterday'"),
    (["--by", "team"], "--by: unknown grouping 'team'"),
    (["--by", "tenant,tenant"], "--by: 'tenant,tenant' names a grouping twice"),
    (["--format", "xml"], "--format: unknown format 'xml'"),
    (["--since", "1d", "--until", "2d"], "--until: before --since"),
])
def test_bad_arguments_are_one_line_errors(args: list[str], msg: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "suanli.cli.main", "report", "--db",
                        db.sqlite_url(tmp_path / "none.db"), *args], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "COLUMNS": "200"})
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().count("\n") == 0 and msg in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_api_route_scopes_tenants_and_metrics_count(month: tuple[Store, str, Path]) -> None:
    store, _, fleet = month
    app = create_app(store)
    app.state.metrics.accounting = Accounting.from_file(fleet)
    admin = store.create_token(admin=True, tenant=None)
    nlp = store.create_token(admin=False, tenant="nlp")
    with TestClient(app) as c:
        q = {"since": "2023-11-14T22:13:20", "until": "2023-12-14T22:13:20", "by": "tenant"}
        r = c.get("/v1/report", params=q, headers={"Authorization": f"Bearer {admin}"})
        assert r.status_code == 200, r.text
        rows = by(r.json()["rows"], "tenant")
        assert rows["nlp"]["usd"] == pytest.approx(166 * H100_USD) and rows["vision"]["usd"] is None
        r = c.get("/v1/report", params={**q, "series_step_s": 86400},
                  headers={"Authorization": f"Bearer {nlp}"})
        assert [x["tenant"] for x in r.json()["rows"]] == ["nlp"]  # a tenant sees only its own usage
        assert {p["tenant"] for p in r.json()["series"]} == {"nlp"}
        r = c.get("/v1/report", params={"by": "team"}, headers={"Authorization": f"Bearer {admin}"})
        assert r.status_code == 422 and "by: unknown grouping 'team'" in r.json()["detail"]
        r = c.get("/v1/report", params={"since": "soon"}, headers={"Authorization": f"Bearer {admin}"})
        assert r.status_code == 422 and r.json()["detail"].startswith("since:")
        assert c.get("/v1/report").status_code == 401
        text = c.get("/metrics").text
    # all records (the month, the straddler in full and the one after it): nlp on H100 = 80 + 6 + 160 + 8
    line = next(x for x in text.splitlines()
                if x.startswith('suanli_usage_chip_seconds_total{model="H100",tenant="nlp"}'))
    assert float(line.split()[-1]) == pytest.approx((80 + 6 + 160 + 8) * H)
    line = next(x for x in text.splitlines()
                if x.startswith('suanli_usage_energy_joules_total{model="910B",tenant="vision"}'))
    assert float(line.split()[-1]) == pytest.approx(40 * ASC_KWH * 3.6e6)


def random_records(n: int, seed: int = 3) -> list[dict[str, Any]]:
    """Usage records around the month: straddling both bounds, four models (BR100 without a price, XPU-9 unknown
    to the catalog: no TDP either), measured energy on some, services among the jobs."""
    import random

    rng = random.Random(seed)
    out = []
    for i in range(n):
        job = rng.randrange(n // 3 + 1)
        model = ("H100", "910B", "BR100", "XPU-9")[job % 4] if rng.random() < 0.9 else "H100"
        start = T0 + rng.uniform(-2 * DAY, 31 * DAY)
        dur = rng.uniform(0, 3 * DAY) if rng.random() < 0.1 else rng.expovariate(1 / H)
        chips = float(rng.choice((0.5, 1, 2, 8)))
        o = rng.choice(("succeeded", "failed", "node-lost", "cancelled", "preempted", "lost"))
        cs = chips * dur
        lost = 0.0 if o in ("succeeded", "preempted") else cs * (rng.random() if o == "node-lost" else 1.0)
        out.append({"attempt_id": i + 1, "job_id": job + 1, "job_name": f"j{job}", "tenant": f"t{job % 3}",
                    "queue": "q", "kind": "serve" if job % 5 == 0 else "train",
                    "node": f"n{rng.randrange(12)}" if i % 50 else "o'node; --",  # quoted in the price table
                    "model": model, "chips": chips, "started_at": start, "ended_at": start + dur, "chip_s": cs,
                    "useful_chip_s": cs - lost, "lost_chip_s": lost, "outcome": o, "llm": "",
                    "energy_j": cs * 400.0 if rng.random() < 0.2 else None})
    return out


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_job_rows_priced_in_the_database_equal_the_cell_path(backend: str, tmp_path: Path) -> None:
    """``--by job`` (priced in SQL, one row per job) gives the figures the general path (cells priced in Python)
    gives, unknown prices and energies included, records straddling the window included."""
    from suanli.accounting.report import build_rows, job_rows

    if backend == "sqlite":
        url = db.sqlite_url(tmp_path / "j.db")
    else:
        from test_control_store import pg_url_or_skip

        url = pg_url_or_skip()
    store = Store.open(url)
    with store.write() as c:
        c.execute(db.usage.insert(), random_records(600))
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET + "  - {name: other, count: 1, accelerator: H100, per_node: 8, pue: 1.6, "
                     "nodes: [n1, n2]}\n")  # two pools of H100 with different PUE (and prices)
    acct = Accounting.from_file(fleet)
    for since, until in ((T0, T1), (T0 + 3 * DAY, T0 + 9 * DAY)):
        fast = job_rows(store, since, until, acct)
        slow = build_rows(store.usage_cells(since, until, ("job",)), ("job",), acct)
        assert [r["job"] for r in fast] == [r["job"] for r in slow] and len(fast) > 50
        assert any(r["usd"] is None for r in fast) and any(r["usd"] is not None for r in fast)
        for a, b in zip(fast, slow, strict=True):
            assert set(a) == set(b)
            for k, v in a.items():
                if isinstance(v, float):
                    assert b[k] == pytest.approx(v, rel=1e-9, abs=1e-9), (k, a, b)
                elif isinstance(v, dict):
                    assert v.keys() == b[k].keys() and all(b[k][c] == pytest.approx(x) for c, x in v.items())
                else:
                    assert v == b[k], (k, a, b)
    store.close()
