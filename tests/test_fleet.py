from __future__ import annotations

from pathlib import Path

import pytest

from suanli.errors import SpecError
from suanli.fleet import generate_cluster, load_cluster
from suanli.fleet.loaders import cluster_from_yaml_text, parse_memory_mib

GOOD = """\
name: lab
pools:
  - name: h100
    count: 4
    accelerator: h100-sxm
    per_node: 8
    cpu: 96
    memory: 1Ti
    domain: {nodes: 2}
    rack: {nodes: 4}
  - name: br
    count: 2
    accelerator: BR100
    per_node: 8
  - name: cpu
    count: 1
"""


def test_cluster_from_yaml() -> None:
    c = cluster_from_yaml_text(GOOD, "lab.yaml")
    s = c.summary()
    assert s["models"] == {"H100": 32, "BR100": 16}
    assert s["nodes"] == 7 and s["devices"] == 48 and s["dies"] == 32 + 32
    assert len({c.nodes[i].domain for i in range(4)}) == 2  # 2 nodes per NVLink domain
    assert c.nodes[0].cpu_milli == 96_000 and c.nodes[0].memory_mib == 1024 * 1024
    assert c.nodes[6].devices == 0


@pytest.mark.parametrize("text,where", [
    ("name: x\npools:\n  - name: a\n    count: -1\n    accelerator: H100\n", "lab.yaml:4: pools[0].count"),
    ("name: x\npools:\n  - name: a\n    count: 1\n    acelerator: H100\n", "lab.yaml:5: pools[0].acelerator"),
    ("name: x\npools:\n  - name: a\n    count: 1\n    accelerator: H100\n    memory: lots\n",
     "lab.yaml:6: pools[0].memory"),
    ("name: x\npools: [\n", "lab.yaml:3: not valid YAML"),
])
def test_bad_yaml_names_file_line_and_field(text: str, where: str) -> None:
    with pytest.raises(SpecError) as e:
        cluster_from_yaml_text(text, "lab.yaml")
    assert where in str(e.value)


def test_unknown_accelerator_in_yaml() -> None:
    with pytest.raises(SpecError, match="unknown accelerator 'X1'"):
        cluster_from_yaml_text("pools:\n  - {name: a, count: 1, accelerator: X1}\n", "c.yaml")


def test_load_cluster_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such file"):
        load_cluster(tmp_path / "nope.yaml")


def test_generator() -> None:
    c = generate_cluster(100, ["H100", "910C"], 8)
    assert c.summary()["models"] == {"H100": 50, "910C": 50}
    assert generate_cluster(101, ["H100", "910C"], 8).summary()["models"] == {"H100": 50, "910C": 51}
    assert c.n_devices == 100 and c.max_devices_per_node == 8


def test_memory_units() -> None:
    assert parse_memory_mib("512Gi") == 512 * 1024
    assert parse_memory_mib("2Ti") == 2 * 1024 * 1024
    assert parse_memory_mib(64) == 64 * 1024
    with pytest.raises(ValueError):
        parse_memory_mib("-3x")


def test_openb_node_list(shared: Path) -> None:
    c = load_cluster(shared / "traces/alibaba-openb-2023/openb_node_list_gpu_node.csv")
    assert c.n_nodes == 1213 and c.n_devices == 6212 and len(c.models) == 7


def test_gfs_node_list(shared: Path) -> None:
    c = load_cluster(shared / "traces/alibaba-gfs-2026/node_info_df.csv")
    assert c.n_nodes == 4278 and c.summary()["models"]["H800"] > 0


def test_malformed_node_list(tmp_path: Path) -> None:
    p = tmp_path / "n.csv"
    p.write_text("sn,cpu_milli,memory_mib,gpu,model\nnode-a,64000,1024,two,T4\n")
    with pytest.raises(SpecError, match=r"n.csv:2: bad node row"):
        load_cluster(p)
