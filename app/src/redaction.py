"""Secret scrubbing shared by the log sink, the error responses (plain and streamed) and the
benchmark result files.

What is removed: each secret as it is and in base64 (standard and URL-safe, at any alignment
inside a longer base64 text, as in an `Authorization: Basic` value); any OpenRouter key
(`sk-or-...`), ours or not; and the value of anything labelled Authorization.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable

REDACTED = "[REDACTED]"
_AUTHORIZATION = re.compile(
    r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)((?:bearer|basic|token)\s+)?[^\s'\",}]+"
)
_OPENROUTER_KEY_PREFIX = "sk-or-"
_OPENROUTER_KEY = re.compile(r"sk-or-[A-Za-z0-9_\-]+")
# Shorter base64 runs could occur by chance in ordinary text.
_MIN_ENCODED_CHARS = 8
_URL_SAFE = str.maketrans("+/", "-_")


def encoded_forms(secret: str) -> set[str]:
    """The base64 characters that `secret` alone decides, for each of the three alignments it
    can have inside a longer encoded text (the characters at its edges also carry bits of
    its neighbours, so they are left out)."""
    data = secret.encode()
    forms: set[str] = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + data).decode("ascii")
        core = encoded[-(-offset * 4 // 3) : 8 * (offset + len(data)) // 6]
        if len(core) >= _MIN_ENCODED_CHARS:
            forms.update((core, core.translate(_URL_SAFE)))
    return forms


class Redactor:
    def __init__(self, secrets: Iterable[str]) -> None:
        values = {s for s in secrets if s}
        for secret in list(values):
            values |= encoded_forms(secret)
        # Longest first, so a secret that contains another is removed whole.
        self._secrets = sorted(values, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        if _OPENROUTER_KEY_PREFIX in text:
            text = _OPENROUTER_KEY.sub(REDACTED, text)
        return _AUTHORIZATION.sub(lambda m: f"{m.group(1)}{m.group(2) or ''}{REDACTED}", text)
