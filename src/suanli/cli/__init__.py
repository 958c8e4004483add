"""The ``suanli`` command line (Typer + rich)."""
