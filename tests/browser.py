"""Headless Chromium for report tests: found, or installed with apt-get (as root) when absent."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                  "--enable-logging=stderr", "--v=0"]


def _find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's `chromium`, installed with apt-get when absent (as root). Without it the browser tests
    skip with the reason — unless GRISTMILL_REQUIRE_BROWSER=1 (CI), where they fail instead."""
    found = _find_chromium()
    why = ""
    if not found:
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            why = "chromium is not installed and apt-get as root is not available here"
        else:
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            for cmd in (["apt-get", "install", "-y", "--no-install-recommends", "chromium", "fonts-liberation"],
                        ["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "chromium", "fonts-liberation"]):
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
                if cmd[1] == "install" and proc.returncode == 0:
                    break
            found = _find_chromium()
            if not found:
                why = f"apt-get install chromium failed: {proc.stderr.strip()[-300:]}"
    if not found:
        if os.environ.get("GRISTMILL_REQUIRE_BROWSER") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return found


def load_page(chromium: str, page: Path, tmp_path: Path, screenshot: Path | None = None) -> tuple[str, list[str]]:
    """The DOM Chromium built from ``page`` and every console message it logged."""
    common = CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path / 'profile'}"]
    proc = subprocess.run([chromium, *common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        shot = subprocess.run([chromium, *common, "--window-size=1280,3200", f"--screenshot={screenshot}", page.as_uri()],
                              capture_output=True, text=True, timeout=120)
        assert shot.returncode == 0 and screenshot.stat().st_size > 20_000, shot.stderr[-2000:]
    return proc.stdout, console


