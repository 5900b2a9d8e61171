"""End-to-end fixtures: the emulator and the app as real processes on loopback ports.

The session shares one emulator and one app (with an inbound key, so every call proves the
key works). Tests that need other settings start their own app through `start_app`. Every
response read by these clients, and every file the processes write, goes through the secret
audit (see `tests/helpers/audit.py` and `test_secrets.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers.audit import SecretAudit
from tests.helpers.e2e import E2E_REPORT, INBOUND_KEY, UPSTREAM_KEY
from tests.helpers.launcher import Launcher, StartApp, audited_client
from tests.helpers.processes import ServiceProcess

E2E_DIR = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: runs the service as real processes on loopback")
    config.addinivalue_line("markers", "load: sustained load; LOAD_SECONDS sets its duration")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every e2e test, and run the secret audit after all the others."""
    audit_items = []
    for item in items:
        if E2E_DIR in Path(item.path).parents:
            item.add_marker(pytest.mark.e2e)
            if Path(item.path).name == "test_secrets.py":
                audit_items.append(item)
    for item in audit_items:
        items.remove(item)
        items.append(item)


@pytest.fixture(scope="session")
def e2e_report(pytestconfig: pytest.Config) -> list[str]:
    """Lines for the end-of-run summary (tests/conftest.py prints them, from every worker)."""
    return pytestconfig.stash.setdefault(E2E_REPORT, [])


@pytest.fixture(autouse=True)
def no_service_died_unexpectedly(launcher: Launcher) -> Iterator[None]:
    """Name the culprit when a shared process is gone: an app that crashed, or a SIGTERM from
    outside (another process on this machine killing `src.serve` by name), not the test.
    """

    def check(when: str) -> None:
        for process in launcher.processes:
            if process.died_unexpectedly():
                process.stopping = True  # reported once; later tests fail on their own
                code = process.popen.returncode if process.popen else None
                pytest.fail(
                    f"{process.name} (pid {process.pid}) exited with {code} {when}, and no test "
                    f"stopped it\n{process.output()}\n--- log tail\n{process.log_text()[-2000:]}"
                )

    check("before this test")
    yield
    check("during this test")


@pytest.fixture(scope="session")
def audit() -> SecretAudit:
    return SecretAudit([UPSTREAM_KEY, INBOUND_KEY])


@pytest.fixture(scope="session")
def launcher(tmp_path_factory: pytest.TempPathFactory, audit: SecretAudit) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path_factory.mktemp("e2e"))
    try:
        yield launcher
    finally:
        launcher.stop_all()
    # What the processes wrote while stopping is checked too. test_secrets runs after the other
    # e2e files of a serial run; with parallel workers, other files may run after it on the
    # same worker, so every leak of the session, in a response or a file, fails here.
    for process in launcher.processes:
        audit.check_files(process.files())
    assert audit.leaks == [], f"secrets in responses or files: {audit.leaks}"


@pytest.fixture(scope="session")
def emulator(launcher: Launcher) -> ServiceProcess:
    return launcher.emulator()


@pytest.fixture(scope="session")
def app(launcher: Launcher, emulator: ServiceProcess) -> ServiceProcess:
    """The shared app: inbound key required, upstream key set, the emulator behind it."""
    return launcher.app("app", emulator, PROXY_API_KEYS=INBOUND_KEY)


@pytest.fixture(scope="session")
def client(audit: SecretAudit, app: ServiceProcess) -> Iterator[httpx.Client]:
    with audited_client(audit, app.url) as http:
        yield http


@pytest.fixture
def start_app(launcher: Launcher, emulator: ServiceProcess) -> Iterator[StartApp]:
    """`start_app(name, upstream=<the emulator>, **ENV)`: an app stopped when the test ends."""
    started: list[ServiceProcess] = []

    def start(
        name: str, upstream: ServiceProcess | str | None = emulator, **overrides: str
    ) -> ServiceProcess:
        process = launcher.app(name, upstream, **overrides)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def connect(audit: SecretAudit) -> Iterator[Callable[[ServiceProcess], httpx.Client]]:
    """An audited client for an app started by the test (no inbound key needed there)."""
    clients: list[httpx.Client] = []

    def make(process: ServiceProcess) -> httpx.Client:
        http = audited_client(audit, process.url, authorized=False)
        clients.append(http)
        return http

    yield make
    for http in clients:
        http.close()
