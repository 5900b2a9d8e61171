"""What a client without any key can make the service spend, against a live process: a huge
header, headers sent one byte at a time, idle half-sent requests by the thousand, and more
connections than MAX_CONNECTIONS. Each time the limit answers, and /health keeps answering.

/health latency is asserted with a generous bound (it only proves the service still answers on
a loaded machine); the measured figures are printed in the e2e summary.
"""

from __future__ import annotations

import contextlib
import json
import resource
import selectors
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.e2e import INBOUND_KEY
from tests.helpers.launcher import Launcher, StartApp
from tests.helpers.limited_serve import DESCRIPTOR_LIMIT
from tests.helpers.processes import ServiceProcess, wait_until
from tests.helpers.raw_http import (
    HealthProbe,
    answered,
    connect,
    health,
    read_response,
)

MIB = 1024 * 1024
HEALTH_BOUND_SECONDS = 5.0
HEAD_START = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n"


def peak_rss(process: ServiceProcess) -> int:
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM line")  # pragma: no cover - Linux always has it


def assert_health_kept_answering(probe: HealthProbe) -> None:
    assert probe.results, "no /health probe ran"
    assert not probe.failures, f"/health failed during the attack: {probe.summary()}"
    assert probe.slowest < HEALTH_BOUND_SECONDS, probe.summary()


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def test_a_64_mib_header_is_refused_with_431_while_health_keeps_answering(
    start_app: StartApp, e2e_report: list[str]
) -> None:
    app = start_app("big-header")
    memory_before = peak_rss(app)
    sent = 0
    with HealthProbe(app.port) as probe, connect(app.port) as sock:
        sock.sendall(HEAD_START + b"X-Big: ")
        try:
            # Like any client, it stops sending once the server has answered.
            while sent < 64 * MIB and not answered(sock):
                sock.sendall(b"a" * MIB)
                sent += MIB
            if sent == 64 * MIB:
                sock.sendall(b"\r\n\r\n")
        except OSError:
            pass  # the server may stop reading once it has answered
        response = read_response(sock, timeout=60)

    assert response is not None, "the connection closed without an answer"
    assert response.status == 431, response
    body = response.json()
    assert body["error"] == "RequestHeadersTooLarge"
    assert "MAX_HEADER_BYTES=65536" in str(body["detail"])
    assert body["request_id"] == response.headers["x-request-id"]
    assert sent < 64 * MIB, "the answer came only after the whole header"
    assert peak_rss(app) - memory_before < 32 * MIB
    assert_health_kept_answering(probe)
    assert wait_until(
        lambda: "REFUSED | " in app.log_text() and "status_code=431" in app.log_text(), 5
    )
    e2e_report.append(f"64 MiB header: 431 after {sent // MIB} MiB sent; /health {probe.summary()}")


def test_headers_sent_one_byte_at_a_time_are_cut_off_at_the_header_timeout(
    start_app: StartApp, sockets: list[socket.socket], e2e_report: list[str]
) -> None:
    timeout, connections = 3.0, 500
    app = start_app("slow-headers", HEADER_TIMEOUT_SECONDS=str(timeout))
    selector = selectors.DefaultSelector()
    opened_at: dict[socket.socket, float] = {}
    received: dict[socket.socket, bytes] = {}
    closed_after: dict[socket.socket, float] = {}
    for _ in range(connections):
        sock = connect(app.port)
        sockets.append(sock)
        opened_at[sock] = time.monotonic()
        received[sock] = b""
        selector.register(sock, selectors.EVENT_READ)
    opened_at_by_fd = {sock.fileno(): sock for sock in opened_at}
    request = HEAD_START + b"X-Slow: " + b"a" * 1000

    with HealthProbe(app.port) as probe:
        deadline = time.monotonic() + timeout + 30
        for index in range(len(request)):
            if not selector.get_map() or time.monotonic() > deadline:
                break
            for sock in list(opened_at):
                if sock not in closed_after:
                    with contextlib.suppress(OSError):  # closed by the server: noticed below
                        sock.send(request[index : index + 1])
            next_byte = time.monotonic() + 2.0  # one byte every 2 s
            while selector.get_map() and (wait := next_byte - time.monotonic()) > 0:
                for key, _ in selector.select(wait):
                    sock = opened_at_by_fd[key.fd]
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        data = b""
                    received[sock] += data
                    if not data:
                        closed_after[sock] = time.monotonic() - opened_at[sock]
                        selector.unregister(sock)

    assert len(closed_after) == connections, f"{connections - len(closed_after)} still open"
    # The server's clock for the deadline may be read a little before the connect returned.
    assert min(closed_after.values()) >= timeout - 0.5, "closed before the header timeout"
    statuses = {data.split(b"\r\n", 1)[0] for data in received.values()}
    assert statuses == {b"HTTP/1.1 408 Request Timeout"}
    assert_health_kept_answering(probe)
    times = sorted(closed_after.values())
    e2e_report.append(
        f"{connections} slow header senders, HEADER_TIMEOUT_SECONDS={timeout:g}: closed after "
        f"{times[0]:.2f}-{times[-1]:.2f} s; /health {probe.summary()}"
    )


def test_idle_half_sent_requests_cannot_exhaust_the_descriptors(
    launcher: Launcher,
    emulator: ServiceProcess,
    sockets: list[socket.socket],
    e2e_report: list[str],
) -> None:
    attackers = 3 * DESCRIPTOR_LIMIT
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < attackers + 200:
        pytest.skip(f"this test process may open only {hard} files")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, attackers + 200), hard))
    app = launcher.app("descriptors", emulator, module="tests.helpers.limited_serve")
    try:
        most_descriptors = 0
        with HealthProbe(app.port, interval=0.05) as probe:
            for _ in range(attackers):
                try:
                    sock = connect(app.port, timeout=5)
                    sockets.append(sock)
                    sock.sendall(HEAD_START)  # and never the blank line that ends it
                except OSError:
                    pass  # refused or reset: the descriptors are what is checked
                most_descriptors = max(most_descriptors, app.fd_count())
            time.sleep(1.0)  # still held open, still probed
        assert_health_kept_answering(probe)
        assert most_descriptors < DESCRIPTOR_LIMIT
        assert (status := health(app.port)[0]) == 200, status
        # The closes are reported as a count within about a second.
        made_room = "to make room for new ones: MAX_CONNECTIONS reached"
        assert wait_until(lambda: made_room in app.log_text(), 10.0)
        assert "MAX_CONNECTIONS=1000 lowered to" in app.log_text()
        assert "Too many open files" not in app.output() + app.log_text()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        app.stop()
    e2e_report.append(
        f"{attackers} idle half-sent requests, {DESCRIPTOR_LIMIT} descriptors allowed: at most "
        f"{most_descriptors} open; /health {probe.summary()}"
    )


def test_requests_past_max_connections_are_answered_503_json(
    start_app: StartApp, sockets: list[socket.socket]
) -> None:
    app = start_app("capacity", MAX_CONNECTIONS="8")
    # Requests the app is busy with: their answer comes late. (A connection still sending its
    # body would be closed to make room instead.)
    body = b'{"model": "emulator/small", "prompt": "[[emulator:delay=20]] hi", "max_tokens": 8}'
    for _ in range(8):
        sock = connect(app.port)
        sockets.append(sock)
        sock.sendall(
            b"POST /generate HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )

    def refused() -> bool:
        with connect(app.port) as sock:
            sock.sendall(
                HEAD_START.replace(b"\r\nHost", b"\r\nConnection: close\r\nHost") + b"\r\n"
            )
            response = read_response(sock)
        if response is None or response.status != 503:
            return False
        body = response.json()
        assert body["error"] == "ServiceUnavailable"
        assert "MAX_CONNECTIONS=8" in str(body["detail"])
        assert body["request_id"] == response.headers["x-request-id"]
        assert response.headers["retry-after"] == "1"
        return True

    assert wait_until(refused, 10.0, interval=0.1), "no 503 past MAX_CONNECTIONS"
    for sock in sockets:
        sock.close()
    assert wait_until(lambda: health(app.port)[0] == 200, 10.0, interval=0.1)


@pytest.mark.parametrize("pieces", [1, 64], ids=["one write", "many writes"])
def test_headers_up_to_max_header_bytes_are_served_and_past_it_refused(
    start_app: StartApp, pieces: int
) -> None:
    app = start_app("header-sizes")

    def ask(header_bytes: int) -> int | None:
        head = HEAD_START + b"Connection: close\r\nX-Pad: "
        head += b"a" * (header_bytes - len(head) - 4) + b"\r\n\r\n"
        step = -(-len(head) // pieces)
        with connect(app.port) as sock:
            for start in range(0, len(head), step):
                sock.sendall(head[start : start + step])
            response = read_response(sock)
        return response.status if response else None

    assert ask(60 * 1024) == 200
    assert ask(70 * 1024) == 431
    assert ask(1024 * 1024) == 431


def test_a_slow_answer_and_a_kept_alive_connection_are_not_cut_by_the_header_timeout(
    start_app: StartApp,
) -> None:
    app = start_app("slow-answer", HEADER_TIMEOUT_SECONDS="1")
    body = b'{"model": "emulator/small", "prompt": "[[emulator:delay=2.5]] hi", "max_tokens": 8}'
    request = (
        b"POST /generate?stream=true HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )
    with connect(app.port, timeout=30) as sock:
        sock.sendall(request)
        sock.settimeout(30)
        received = b""
        # The whole chunked answer: its events, then the empty chunk that ends it.
        while not (b"event: done" in received and received.endswith(b"\r\n0\r\n\r\n")):
            part = sock.recv(65536)
            assert part, f"closed mid-answer: {received!r}"
            received += part
        assert received.startswith(b"HTTP/1.1 200 OK")
        # The same connection serves the next request within the header timeout.
        sock.sendall(HEAD_START + b"\r\n")
        response = read_response(sock)
    assert response is not None and response.status == 200


def slow_body_head(path: bytes, content_type: bytes, auth: bool) -> bytes:
    key = b"Authorization: Bearer " + INBOUND_KEY.encode() + b"\r\n" if auth else b""
    return (
        b"POST " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + key + b"Content-Type: "
        b"" + content_type + b"\r\nContent-Length: 100000\r\n\r\n"
    )


@pytest.mark.parametrize("keyed", [False, True], ids=["no keys", "one valid key"])
def test_bodies_sent_one_byte_a_second_are_cut_off_at_the_body_timeout(
    start_app: StartApp, sockets: list[socket.socket], e2e_report: list[str], keyed: bool
) -> None:
    timeout, connections = 3.0, 40
    keys = {"PROXY_API_KEYS": INBOUND_KEY} if keyed else {}
    app = start_app(
        "slow-bodies", MAX_CONNECTIONS=str(connections), BODY_TIMEOUT_SECONDS=str(timeout), **keys
    )
    # Every connection holds every slot: JSON bodies and multipart uploads, half each.
    heads = [
        slow_body_head(b"/generate", b"application/json", keyed),
        slow_body_head(b"/benchmark", b"multipart/form-data; boundary=xyz", keyed)
        + b'--xyz\r\nContent-Disposition: form-data; name="prompt_file"; filename="p.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\n",
    ]
    selector = selectors.DefaultSelector()
    opened_at: dict[socket.socket, float] = {}
    received: dict[socket.socket, bytes] = {}
    closed_after: dict[socket.socket, float] = {}
    for index in range(connections):
        sock = connect(app.port)
        sockets.append(sock)
        sock.sendall(heads[index % 2])
        opened_at[sock] = time.monotonic()
        received[sock] = b""
        selector.register(sock, selectors.EVENT_READ)
    by_fd = {sock.fileno(): sock for sock in opened_at}

    with HealthProbe(app.port) as probe:
        deadline = time.monotonic() + timeout + 30
        while selector.get_map() and time.monotonic() < deadline:
            for sock in opened_at:
                if sock not in closed_after:
                    with contextlib.suppress(OSError):  # closed by the server: noticed below
                        sock.send(b"a")
            next_byte = time.monotonic() + 1.0  # one byte a second
            while selector.get_map() and (wait := next_byte - time.monotonic()) > 0:
                for key, _ in selector.select(wait):
                    sock = by_fd[key.fd]
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        data = b""
                    received[sock] += data
                    if not data:
                        closed_after[sock] = time.monotonic() - opened_at[sock]
                        selector.unregister(sock)

    assert len(closed_after) == connections, f"{connections - len(closed_after)} still open"
    answers = {sock: data for sock, data in received.items() if data}
    # A connection may also be closed unanswered to make room for a /health probe.
    assert len(answers) >= connections // 2, f"only {len(answers)} answered"
    for sock, data in answers.items():
        assert data.startswith(b"HTTP/1.1 408 Request Timeout"), data[:200]
        head, _, body = data.partition(b"\r\n\r\n")
        error = json.loads(body)
        assert error["error"] == "RequestTimeout"
        assert "BODY_TIMEOUT_SECONDS=3" in error["detail"]
        assert f"x-request-id: {error['request_id']}".encode() in head
        # The server's clock for the deadline may be read a little before the send returned.
        assert closed_after[sock] >= timeout - 0.5, "answered before the body timeout"
    assert_health_kept_answering(probe)
    assert wait_until(lambda: "BODY_TIMEOUT_SECONDS=3" in app.log_text(), 10.0)
    times = sorted(closed_after.values())
    e2e_report.append(
        f"{connections} slow body senders ({'one key' if keyed else 'no keys'}), "
        f"BODY_TIMEOUT_SECONDS={timeout:g}: closed after {times[0]:.2f}-{times[-1]:.2f} s; "
        f"/health {probe.summary()}"
    )


def test_a_body_sent_in_pieces_within_the_body_timeout_is_served_and_kept_alive(
    start_app: StartApp,
) -> None:
    app = start_app("body-in-pieces", BODY_TIMEOUT_SECONDS="3", HEADER_TIMEOUT_SECONDS="3")
    body = b'{"model": "emulator/small", "prompt": "hi", "max_tokens": 4}'
    head = (
        b"POST /generate HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    with connect(app.port, timeout=30) as sock:
        # The second request on the same connection has a deadline of its own.
        for request in range(2):
            if request:
                time.sleep(2.0)  # idle on the kept-alive connection first
            sock.sendall(head + body[:10])
            time.sleep(1.0)
            sock.sendall(body[10:30])
            time.sleep(1.0)
            sock.sendall(body[30:])
            response = read_response(sock, timeout=30)
            assert response is not None and response.status == 200, response
