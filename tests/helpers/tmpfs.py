"""A real, small filesystem for the disk-fault tests: a tmpfs mounted for one test, filled with
a filler file and freed by deleting it."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

SIZE = "256k"
FILLER = "filler"
_CHUNK = b"\0" * 4096


@contextmanager
def small_tmpfs(directory: Path, size: str = SIZE, *, read_only: bool = False) -> Iterator[Path]:
    """`directory` with a tmpfs of `size` mounted on it (read-only: not even root may write);
    unmounted at the end, even on failure."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    directory.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}{',ro' if read_only else ''}", "tmpfs"]
        + [str(directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield directory
    finally:
        # Lazy: a file a test left open must not keep the mount (and the next test) hanging.
        subprocess.run(["umount", "-l", str(directory)], check=False)


def fill(mount: Path) -> Path:
    """Write a filler file until the filesystem is full; returns it (delete it to free)."""
    filler = mount / FILLER
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            try:
                os.write(fd, _CHUNK)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
        # The last page may take a few bytes more.
        for _ in range(4096):
            try:
                os.write(fd, b"\0")
            except OSError:
                break
    finally:
        os.close(fd)
    return filler
