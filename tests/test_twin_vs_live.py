"""Twin versus live on a small slice (the short version of ``bench/twin_vs_live.py``): the live control plane on
virtual nodes (``suanli up --virtual`` in a subprocess, jobs through the API) and the twin agree - run on the live
loop's own tick instants, the twin starts the jobs at the ticks live started them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import twin_vs_live  # noqa: E402


def test_twin_and_live_agree_on_a_small_slice(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    n = 40
    t = np.cumsum(rng.exponential(60.0, n))
    trace = tmp_path / "t.csv"
    trace.write_text("job_id,submission_time,duration,num_gpu\n" + "".join(
        f"j{i},{t[i]:.1f},{int(rng.integers(100, 1500))},{int(rng.choice([1, 1, 2, 4, 8]))}\n" for i in range(n)))
    a = argparse.Namespace(trace=str(trace), jobs=n, cluster="2x8xBR100", load=0.9, cap_duration=0.0, speed=None,
                           wall=15.0, policy="fifo", concurrency=4, timeout=120.0, keep=False)
    out = twin_vs_live.run(a)
    assert out["completed"] == {"twin": n, "live": n, "twin_at_tick": n} and out["live_lost"] == 0
    # given the instants at which the live loop looked, the twin makes the same decisions: differences between
    # the two are when the loop looked (its tick), nothing else
    assert out["same_start_as_live"] >= 0.9 * n, out["start_diff_s"]
    assert out["over_bound"] == 0, out["worst"]
    # and the figures agree to within what a tick of g virtual seconds does to jobs of a few hundred seconds
    for k in ("avg_jct_s", "makespan_s"):
        assert abs(out[k]["diff_pct"]) < 15, (k, out[k], out["granularity_measured_s"])
