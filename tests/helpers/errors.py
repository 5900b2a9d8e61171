"""What every error answer of the service must look like to the caller."""

from __future__ import annotations

import httpx


def assert_no_traceback(response: httpx.Response) -> None:
    assert "Traceback" not in response.text and 'File "' not in response.text


def assert_error(
    response: httpx.Response, status: int, error: str, detail: str = ""
) -> dict[str, str]:
    """Our error shape: the status, the error type, a message that contains `detail`, the
    request id of the response, and nothing of our internals. Returns the body.
    """
    assert response.status_code == status, response.text
    body: dict[str, str] = response.json()
    assert body["error"] == error, body
    assert body["detail"].strip(), body
    assert detail in body["detail"], body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    assert_no_traceback(response)
    return body


def assert_validation_error(
    response: httpx.Response, location: tuple[str | int, ...], kind: str
) -> None:
    """FastAPI's own 422: a list of errors, the first one about `location`, of type `kind`."""
    assert response.status_code == 422, response.text
    [first, *_] = response.json()["detail"]
    assert tuple(first["loc"]) == location
    assert first["type"] == kind
    assert first["msg"]
    assert_no_traceback(response)
