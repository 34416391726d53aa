"""Small file systems for tests of full and read-only disks: a tmpfs mounted for the test and always
unmounted afterwards. Mounting needs root (CI runs as root); elsewhere the test is skipped with the
reason, or falls back to what an unprivileged user can do (a folder without write permission)."""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest


def can_mount() -> str | None:
    """None when this process can mount a tmpfs, else why not."""
    if os.geteuid() != 0:
        return "mounting a small tmpfs needs root"
    if not Path("/proc/mounts").exists():
        return "no /proc/mounts (not Linux)"
    return None


@contextmanager
def tmpfs(path: Path, size: str = "8m", readonly: bool = False) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` at ``path`` (created), read-only if asked; unmounted on the way out,
    lazily if something still holds it, so a failing test never leaves a mount behind."""
    reason = can_mount()
    if reason:
        pytest.skip(reason)
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if readonly else "")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip() or proc.returncode}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(folder: Path, leave_bytes: int) -> Path:
    """A ballast file that leaves about ``leave_bytes`` free on ``folder``'s file system (what other
    programs filling the disk look like); delete it to free the space again."""
    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize
    ballast = folder / "ballast.bin"
    with ballast.open("wb") as f:
        remaining = max(0, free - leave_bytes)
        chunk = b"\0" * (1 << 20)
        while remaining > 0:
            f.write(chunk[: min(remaining, len(chunk))])
            remaining -= len(chunk)
    return ballast
