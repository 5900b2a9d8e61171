"""Optional inbound authentication: PROXY_API_KEYS guards every endpoint that spends money."""

from __future__ import annotations

import hmac

from fastapi import Request

from src.api.deps import SettingsDep
from src.services.base.exceptions import AuthenticationError


async def require_inbound_key(request: Request, settings: SettingsDep) -> None:
    if not settings.proxy_api_keys:
        return
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    candidate = presented.strip().encode()
    # Compare against every key, always: the time taken says nothing about which one matched.
    matched = False
    for key in settings.proxy_api_keys:
        matched |= hmac.compare_digest(candidate, key.get_secret_value().encode())
    if scheme.lower() != "bearer" or not matched:
        # Worded so that the secret redaction (which rewrites "Authorization: <value>") leaves
        # the instruction readable.
        raise AuthenticationError(
            "Missing or invalid API key: send one of PROXY_API_KEYS in the Authorization header, "
            "as 'Bearer <key>'."
        )
