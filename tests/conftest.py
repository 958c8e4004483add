from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture
def shared() -> Path:
    """The read-only ../shared folder beside the checkout; tests that need it skip without it."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is missing: this test reads the public traces/research beside the checkout")
    return SHARED


@pytest.fixture(autouse=True)
def _no_user_calibration(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The planner reads the user's measured calibration file (suanli plan calibrate): tests never see one."""
    monkeypatch.setenv("SUANLI_CALIBRATION_FILE", str(tmp_path_factory.mktemp("cal") / "calibration.json"))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """Say where the browser tests left their screenshots."""
    try:
        from test_dashboard_browser import SHOTS_KEY
    except ImportError:
        return
    for d in sorted(config.stash.get(SHOTS_KEY, set())):
        terminalreporter.write_line(f"dashboard screenshots: {d}")
