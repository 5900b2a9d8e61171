"""A stand-in for an uploaded prompt file (anything with `async read(size)`)."""

from __future__ import annotations


class FakeUpload:
    """`data` served in the chunks asked for; `size` bytes of "a" when no data is given.

    Counts what was read, so a test can tell an upload was refused without being read whole.
    """

    def __init__(self, data: bytes | None = None, *, size: int = 0) -> None:
        self._data = data
        self.size = len(data) if data is not None else size
        self.read_bytes = 0

    async def read(self, size: int = -1) -> bytes:
        left = self.size - self.read_bytes
        count = left if size < 0 else min(size, left)
        start = self.read_bytes
        self.read_bytes += count
        if self._data is not None:
            return self._data[start : start + count]
        return b"a" * count
