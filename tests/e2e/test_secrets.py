"""Run last (see conftest): no key in any response of the session, nor in any file written.

The upstream key (OPENROUTER_API_KEY) and the inbound key (PROXY_API_KEYS) are both known to
the shared app; responses were checked as they were read, files are checked here. Whatever the
processes write while stopping is checked again when the session ends.
"""

from __future__ import annotations

import httpx

from tests.helpers.audit import SecretAudit
from tests.helpers.e2e import INBOUND_KEY, UPSTREAM_KEY, LogWatch, generate_body, unique
from tests.helpers.launcher import Launcher, audited_client
from tests.helpers.processes import ServiceProcess


def test_the_audit_would_see_a_leak() -> None:
    audit = SecretAudit([UPSTREAM_KEY, INBOUND_KEY])

    audit.check_bytes("a log", f"Authorization: Bearer {UPSTREAM_KEY}".encode())
    audit.check_message("a response", [(b"x-echo", INBOUND_KEY.encode())], b"{}")

    assert len(audit.leaks) == 2


def test_no_key_reaches_a_response_a_log_or_a_result_file(
    audit: SecretAudit, launcher: Launcher, app: ServiceProcess, client: httpx.Client
) -> None:
    responses_before = audit.responses_checked
    log = LogWatch(app, client)
    # The answers most likely to echo a key: our key refused upstream, a caller's key refused,
    # and a request that fails validation.
    assert (
        client.post(
            "/generate", json=generate_body(unique("[[emulator:unauthorized]]"))
        ).status_code
        == 502
    )
    with audited_client(audit, app.url, authorized=False) as anonymous:
        refused = anonymous.get("/models", headers={"Authorization": f"Bearer {INBOUND_KEY}x"})
        assert refused.status_code == 401
    assert client.post("/generate", json={"model": "emulator/small"}).status_code == 422
    log.wait_for_request("POST", "/generate", count=2)

    files = [path for process in launcher.processes for path in process.files()]
    checked = audit.check_files(files)

    assert audit.leaks == []
    # Every process's captured output and the app's log were read; the emulator keeps no log
    # file, and which other files exist depends on which tests ran before this one.
    assert checked == len(files)
    assert app.log_path in files
    for process in launcher.processes:
        assert {process.stdout_path, process.stderr_path} <= set(files)
    # The three answers above at least; the session's earlier answers were checked as read.
    assert audit.responses_checked >= responses_before + 3
