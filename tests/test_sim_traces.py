"""Trace readers (real traces from ../shared when present, documented schemas on small files) and the synthetic mix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from suanli.sim import TraceError, detect_format, read_trace, synthetic

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "traces"


def need(rel: str) -> Path:
    p = SHARED / rel
    if not p.exists():
        pytest.skip(f"shared trace not found at {p}")
    return p


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


PHILLY = "timestamp,duration,num_gpus,gpu_time,cluster\n"


def test_malformed_rows_are_skipped_and_counted_with_file_and_line(tmp_path: Path) -> None:
    p = write(tmp_path, "p.csv", PHILLY + "2017-10-09 07:01:55,66.0,1,66.0,a\n"
              "2017-10-09 07:02:55,abc,1,66.0,a\n"  # line 3: bad duration
              "2017-10-09 07:03:55,10,1.5,66.0,b\n"  # line 4: fractional GPU count
              "2017-10-09 07:04:55,10,2,20,b\n")
    w = read_trace(p)
    assert len(w) == 2 and w.skipped == 2
    assert f"{p}:3:" in w.messages[0] and "duration" in w.messages[0]
    assert f"{p}:4:" in w.messages[1]
    assert w.submit.tolist() == [0.0, 180.0]
    assert w.tenants == ["a", "b"]


def test_strict_fails_on_the_first_malformed_row(tmp_path: Path) -> None:
    p = write(tmp_path, "p.csv", PHILLY + "2017-10-09 07:01:55,66.0,1,66.0,a\n2017-10-09 07:02:55,-5,1,1,a\n")
    with pytest.raises(TraceError, match=r"p\.csv:3: .*negative"):
        read_trace(p, strict=True)


def test_missing_file_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no such file"):
        read_trace(tmp_path / "nope.csv")
    p = write(tmp_path, "x.csv", "a,b,c\n1,2,3\n")
    with pytest.raises(TraceError, match=r"x\.csv:1: cannot detect"):
        read_trace(p)
    with pytest.raises(TraceError, match="unknown trace format"):
        read_trace(p, "nope")


def test_missing_column_names_the_file(tmp_path: Path) -> None:
    p = write(tmp_path, "h.csv", "job_id,submission_time,duration\n1,2,3\n")
    with pytest.raises(TraceError, match=r"h\.csv:1"):
        read_trace(p, "itp")


def test_documented_schemas_helios_acme_pai(tmp_path: Path) -> None:
    h = write(tmp_path, "cluster_log.csv",
              "job_id,user,vc,gpu_num,cpu_num,node_num,state,submit_time,start_time,end_time,duration,queue\n"
              "1,u1,vcA,16,96,2,COMPLETED,2020-04-01 00:00:06,2020-04-01 00:00:10,2020-04-01 01:00:10,3600,4\n"
              "2,u2,vcB,0,4,1,COMPLETED,2020-04-01 00:00:07,2020-04-01 00:00:10,2020-04-01 00:01:10,60,3\n")
    assert detect_format(h) == "helios"
    w = read_trace(h)
    assert len(w) == 1 and w.dropped == 1 and w.count[0] == 16 and w.per_node[0] == 8 and w.tenants == ["vcA"]
    a = write(tmp_path, "trace_seren.csv",
              "job_id,user,node_num,gpu_num,cpu_num,type,state,submit_time,start_time,end_time,duration,queue,"
              "gpu_time\n5778432,u5907,1,8,128,Other,FAILED,2023-03-01 00:18:22+08:00,2023-03-01 00:18:54+08:00,"
              "2023-03-01 00:20:51+08:00,117,32,936.0\n"
              "5778469,u5907,4,32,128,SFT,COMPLETED,2023-03-01 00:23:58+08:00,2023-03-01 00:24:11+08:00,"
              "2023-03-01 01:09:04+08:00,2693,13,21544.0\n")
    assert detect_format(a) == "acme"
    w = read_trace(a)
    assert w.duration.tolist() == [117.0, 2693.0] and w.submit[1] == 336.0 and w.per_node[1] == 8
    pai = write(tmp_path, "pai_job_table.csv", "j1,i1,u1,Terminated,100,400\nj2,i2,u2,Terminated,150,160\n")
    write(tmp_path, "pai_task_table.csv", "j1,worker,2,Terminated,100,400,600,29,50,V100\n"
          "j2,worker,1,Terminated,150,160,600,29,400,T4\n")
    assert detect_format(pai) == "pai"
    w = read_trace(pai)
    assert w.count.tolist() == [1, 4] and w.milli.tolist() == [1000, 1000] and w.duration.tolist() == [300.0, 10.0]


def test_philly_real_trace() -> None:
    w = read_trace(need("philly/philly.csv"))
    assert len(w) > 80_000 and w.skipped == 0
    assert set(np.unique(w.count).tolist()) >= {1, 2, 4, 8, 16, 128}
    assert (np.diff(w.submit) >= 0).all() and w.submit[0] == 0.0


def test_itp_real_trace() -> None:
    w = read_trace(need("microsoft-itp-2021/cluster01.csv"))
    assert len(w) > 500 and (w.count >= 1).all()


def test_openb_pods_have_fractions_and_cpu() -> None:
    w = read_trace(need("alibaba-openb-2023/openb_pod_list_gpuspec10.csv"))
    assert ((w.milli < 1000) & (w.count == 1)).any()
    assert (w.cpu_milli > 0).all()
    assert any(len(s) >= 1 for s in w.model_sets)  # gpu_spec constraints became model sets
    assert (w.per_node == w.count).all()  # a pod lives on one node


def test_kalos_converted_subset() -> None:
    w = read_trace(need("acme-2023/converted_kalos_trace.csv"))
    assert len(w) == 319 and w.count.max() >= 64


def test_synthetic_follows_published_statistics() -> None:
    w = synthetic(50_000, 10_000, load=0.9, seed=1)
    # AcmeTrace (cluster_summary.csv): median GPU job = 1 GPU; median runtime ~2 min (Seren 122 s, Kalos 124 s);
    # mean request between Seren's 5.7 and Kalos' 26.8 GPUs
    assert np.median(w.count) == 1
    assert 60 <= np.median(w.duration) <= 400
    assert 5.7 <= w.count.mean() <= 26.8
    assert w.count.max() <= 4096 and w.count.max() >= 1024
    big = w.count >= 64
    assert (w.count * w.duration)[big].sum() / (w.count * w.duration).sum() > 0.5  # pre-training dominates
    assert w.offered_load(10_000) == pytest.approx(0.9, rel=0.02)
    a, b = synthetic(1000, 512, seed=7), synthetic(1000, 512, seed=7)
    assert np.array_equal(a.submit, b.submit) and np.array_equal(a.count, b.count)


def test_scaled_to_load() -> None:
    w = synthetic(500, 256, load=0.5, seed=1)
    assert w.scaled_to_load(1.5, 256).offered_load(256) == pytest.approx(1.5)


def test_openb_multigpu_lists_without_times_are_read(tmp_path: Path) -> None:
    p = write(tmp_path, "openb_pod_list_multigpu20.csv", "name,cpu_milli,memory_mib,num_gpu,gpu_milli\n"
              "openb-pod-0000,12000,16384,1,1000\nopenb-pod-0001,6000,12288,1,460\nopenb-pod-0002,8000,1024,2,1000\n")
    assert detect_format(p) == "openb"
    w = read_trace(p)
    assert len(w) == 3 and w.untimed and w.milli.tolist() == [1000, 460, 1000] and w.count.tolist() == [1, 1, 2]
    # the row-by-row reader (used when a row is malformed) agrees
    bad = write(tmp_path, "bad.csv", p.read_text() + "openb-pod-0003,x,1,1,1000\n")
    wb = read_trace(bad, "openb")
    assert wb.untimed and wb.skipped == 1 and wb.milli.tolist() == [1000, 460, 1000]


def test_date_window_keeps_submits_in_range(tmp_path: Path) -> None:
    from suanli.sim.traces import parse_when

    p = write(tmp_path, "p.csv", PHILLY + "2017-10-01 00:00:00,10,1,10,a\n2017-10-02 12:00:00,10,1,10,a\n"
              "2017-10-03 00:00:00,10,2,20,b\n2017-10-04 00:00:00,10,4,40,b\n")
    w = read_trace(p, start=parse_when("2017-10-02"), end=parse_when("2017-10-04"))
    assert w.count.tolist() == [1, 2] and w.submit.tolist() == [0.0, 12 * 3600.0]
    with pytest.raises(TraceError, match="not seconds nor a date-time"):
        parse_when("yesterday")


def test_runtime_estimates_from_a_column_or_a_side_file(tmp_path: Path) -> None:
    p = write(tmp_path, "itp.csv", "job_id,submission_time,duration,num_gpu,pred\n"
              "j1,0,100,1,90\nj2,5,200,2,\nj3,9,300,1,310\n")
    w = read_trace(p, estimate_column="pred")
    assert w.estimate[0] == 90 and np.isnan(w.estimate[1]) and w.estimate[2] == 310
    side = write(tmp_path, "est.csv", "job_id,estimate\nj3,333\nj1,111\n")
    w = read_trace(p, estimates=side)
    assert w.estimate[0] == 111 and np.isnan(w.estimate[1]) and w.estimate[2] == 333
    rows = write(tmp_path, "rows.csv", "row,estimate\n1,222\n")
    ph = write(tmp_path, "p.csv", PHILLY + "2017-10-01 00:00:00,10,1,10,a\n2017-10-01 00:01:00,20,1,20,a\n")
    assert np.isnan(read_trace(ph, estimates=rows).estimate[0]) and read_trace(ph, estimates=rows).estimate[1] == 222
    with pytest.raises(TraceError, match="no job_id column"):
        read_trace(ph, estimates=side)
    with pytest.raises(TraceError, match="estimate column 'nope'"):
        read_trace(p, estimate_column="nope")


def test_partition_by_a_column(tmp_path: Path) -> None:
    p = write(tmp_path, "p.csv", PHILLY + "2017-10-01 00:00:00,10,1,10,vc1\n2017-10-01 00:01:00,20,0,0,vc9\n"
              "2017-10-01 00:02:00,20,2,40,vc2\n")
    w = read_trace(p, partition_by="vc")  # Philly's virtual cluster is its `cluster` column
    assert w.partitions == ["vc1", "vc2"] and w.partition.tolist() == [0, 1]
    assert w.job(1).partitions == ("vc2",) and w.jobs(0, 2)[0].partitions == ("vc1",)
    with pytest.raises(TraceError, match="no such column"):
        read_trace(p, partition_by="rack")
