"""A full output directory: the task fails with a reason naming the disk, the worker lives on."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from runtime_harness import Harness, wait_record

from celery_stable.ledger import Ledger


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 256 KiB filesystem (tmpfs): what a full disk is to the app. Needs root, as the
    suite does (it runs as root in CI)."""
    mount = tmp_path / "videos"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_full_output_directory_fails_the_task_naming_the_disk(
    harness: Harness, ledger: Ledger, small_disk: Path
) -> None:
    worker = harness.ready_worker(CELERY_STABLE_APP_WRITE_PATHS=f"/nonexistent {small_disk}")
    big = harness.send("proj.write", str(small_disk / "big.bin"), 1024)
    record = wait_record(ledger, big, ("failed",), 30)
    assert (record.cause, record.attempts) == ("error", 1)
    assert record.reason.startswith(f"{small_disk} is full (0 B free of 256.0 KiB): OSError: ")
    assert "No space left on device" in record.reason
    # The worker is unharmed, and once there is room again the next video is done.
    (small_disk / "big.bin").unlink()
    after = wait_record(
        ledger, harness.send("proj.write", str(small_disk / "next.bin"), 64), ("done",), 30
    )
    assert after.pid == worker.pid
    assert worker.running()
