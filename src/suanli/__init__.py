"""suanli (算力): an open platform for running a multi-vendor AI-accelerator fleet."""

__version__ = "0.1.0"
