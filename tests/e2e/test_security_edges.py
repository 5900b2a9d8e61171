"""Checks that need a live process: the inbound key refused before a body that never comes,
and a base URL that carries credentials refused at startup without showing them."""

from __future__ import annotations

import time
from pathlib import Path

from tests.helpers.e2e import UPSTREAM_KEY
from tests.helpers.processes import ServiceProcess, free_port, settings_env
from tests.helpers.raw_http import connect, read_response


def test_a_request_without_the_key_is_answered_401_before_its_body_arrives(
    app: ServiceProcess,
) -> None:
    started = time.monotonic()
    with connect(app.port) as sock:
        sock.sendall(
            b"POST /benchmark HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 1000000\r\n\r\n"
        )
        response = read_response(sock, timeout=15)

    assert response is not None and response.status == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"] == "AuthenticationError"
    assert time.monotonic() - started < 15


def test_a_base_url_with_credentials_stops_the_service_at_startup_without_showing_them(
    tmp_path: Path,
) -> None:
    env = settings_env(
        {
            "HOST": "127.0.0.1",
            "PORT": str(free_port()),
            "OPENROUTER_API_KEY": UPSTREAM_KEY,
            "OPENROUTER_BASE_URL": "https://user:hunter2-pass@openrouter.test/api/v1",
            "LOG_DIR": str(tmp_path / "logs"),
            "BENCHMARKS_DIR": str(tmp_path / "benchmarks"),
        }
    )
    process = ServiceProcess("credentials", "src.serve", 0, tmp_path, env, "/health")
    process.start()
    try:
        code = process.wait_exit(20)
    finally:
        process.kill()

    assert code not in (None, 0), "the service started"
    output = process.output() + process.log_text()
    assert "OPENROUTER_BASE_URL must not contain credentials" in output
    assert "hunter2" not in output
