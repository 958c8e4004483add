"""Domain model of the fleet: devices, nodes, interconnect domains, racks, clusters."""

from suanli.fleet.loaders import load_cluster, load_cluster_yaml, load_gfs_nodes, load_openb_nodes
from suanli.fleet.model import CPU_ONLY, Cluster, Device, NodeSpec, build_cluster, generate_cluster

__all__ = [
    "CPU_ONLY",
    "Cluster",
    "Device",
    "NodeSpec",
    "build_cluster",
    "generate_cluster",
    "load_cluster",
    "load_cluster_yaml",
    "load_gfs_nodes",
    "load_openb_nodes",
]
