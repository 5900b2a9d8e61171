"""The proxy variables are process-wide: each test that cares sets its own and clears the rest."""

from __future__ import annotations

import os

import pytest


def clear_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unsets every `*_proxy` variable, in any case (urllib reads them all)."""
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
