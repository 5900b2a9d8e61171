"""With inbound keys, a run belongs to the key that started it: other keys neither see it nor
stop it (a 404, as for a run that does not exist), admin keys see and stop every run."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from src.config import Settings
from src.main import inbound_callers
from src.services.benchmarker.results.file_utils import new_benchmark_id
from src.services.benchmarker.runs import file_store as store
from src.services.benchmarker.runs.owners import EVERYONE, Caller, owner_tag
from tests.helpers.app import Serve, make_settings, read_log
from tests.helpers.errors import assert_error
from tests.helpers.openrouter import MODELS_BODY, HangAfter, error_body, sse_response

pytestmark = pytest.mark.anyio

KEY_A = "owner-key-a-7f3c9e1d2b4a"
KEY_B = "owner-key-b-5e8d0c6a9f1b"
ADMIN = "owner-admin-key-3a9c7e5b1d0f"
DEADLINE = 30.0


def keyed(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"proxy_api_keys": f"{KEY_A},{KEY_B}", "proxy_admin_keys": ADMIN}
    return make_settings(tmp_path, **{**values, **overrides})


def as_key(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class KeyClient:
    """The service as one key sees it."""

    def __init__(self, client: httpx.AsyncClient, key: str | None) -> None:
        self.client = client
        self.headers = as_key(key) if key else {}

    async def get(self, path: str) -> httpx.Response:
        return await self.client.get(path, headers=self.headers)

    async def delete(self, path: str) -> httpx.Response:
        return await self.client.delete(path, headers=self.headers)

    async def listed(self) -> list[str]:
        response = await self.get("/benchmarks")
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["benchmarks"]]

    async def run(self, query: str = "", **form: object) -> dict[str, Any]:
        response = await self.client.post(
            "/benchmark" + query,
            headers=self.headers,
            files={"prompt_file": ("prompts.txt", b"Why is the sky blue?\n", "text/plain")},
            data={"model": "openai/gpt-4o", **{k: str(v) for k, v in form.items()}},
        )
        assert response.status_code in (200, 202), response.text
        body: dict[str, Any] = response.json()
        return body

    async def start(self, **form: object) -> str:
        """A run in the background; the upstream decides whether it ends."""
        return str((await self.run("?background=true", runs=1, **form))["id"])


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not await condition():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.05)


async def wait_finished(caller: KeyClient, benchmark_id: str) -> None:
    async def done() -> bool:
        return bool((await caller.get(f"/benchmarks/{benchmark_id}")).json()["status"] != "running")

    await until(done, f"{benchmark_id} finished")


def run_routes(benchmark_id: str) -> list[str]:
    base = f"/benchmarks/{benchmark_id}"
    return [base, f"{base}/events", f"{base}/report", f"{base}/results.csv", f"{base}/summary.json"]


def assert_hidden(response: httpx.Response, benchmark_id: str) -> None:
    """Word for word what a run that never existed gets."""
    assert_error(response, 404, "NotFoundError", f"No benchmark with id '{benchmark_id}'.")


@pytest.fixture
def models(upstream: respx.MockRouter) -> respx.Route:
    return upstream.get("/models").respond(json=MODELS_BODY)


@pytest.fixture
def answering(upstream: respx.MockRouter, models: respx.Route) -> respx.Route:
    return upstream.post("/chat/completions").mock(side_effect=lambda _: sse_response())


@pytest.fixture
def hanging(upstream: respx.MockRouter, models: respx.Route) -> HangAfter:
    """Every request waits until it is cancelled: runs stay running until stopped."""
    answer = HangAfter(0, sse_response)
    upstream.post("/chat/completions").mock(side_effect=answer)
    return answer


async def test_another_key_gets_404_on_every_route_of_a_finished_run_and_does_not_list_it(
    tmp_path: Path, serve: Serve, answering: respx.Route
) -> None:
    async with serve(keyed(tmp_path)) as client:
        a, b = KeyClient(client, KEY_A), KeyClient(client, KEY_B)
        finished = str((await a.run(runs=1))["id"])
        calls = answering.call_count

        for path in run_routes(finished):
            assert (await a.get(path)).status_code == 200, path
            assert_hidden(await b.get(path), finished)
        assert_hidden(await b.delete(f"/benchmarks/{finished}"), finished)
        assert_error(await a.delete(f"/benchmarks/{finished}"), 409, "ConflictError")
        assert await a.listed() == [finished]
        assert await b.listed() == []

    assert answering.call_count == calls


async def test_another_key_cannot_cancel_a_running_run_and_its_owner_can(
    tmp_path: Path, serve: Serve, hanging: HangAfter
) -> None:
    async with serve(keyed(tmp_path)) as client:
        a, b = KeyClient(client, KEY_A), KeyClient(client, KEY_B)
        running = await a.start()
        await asyncio.wait_for(hanging.hanging.wait(), DEADLINE)

        assert_hidden(await b.delete(f"/benchmarks/{running}"), running)
        for path in run_routes(running)[:3]:  # the files are not there to hide yet
            assert_hidden(await b.get(path), running)
        state = (await a.get(f"/benchmarks/{running}")).json()
        assert state["status"] == "running"
        assert await b.listed() == []

        stopped = await a.delete(f"/benchmarks/{running}")
        assert stopped.status_code in (200, 202), stopped.text
        # The owner is kept on disk, never shown.
        assert "owner" not in state and "owner" not in stopped.json()
        await wait_finished(a, running)
        assert (await a.get(f"/benchmarks/{running}")).json()["status"] == "cancelled"
        assert await a.listed() == [running]
    assert hanging.calls == 1


async def test_an_admin_key_sees_and_cancels_every_run(
    tmp_path: Path, serve: Serve, hanging: HangAfter
) -> None:
    async with serve(keyed(tmp_path)) as client:
        a, b, admin = KeyClient(client, KEY_A), KeyClient(client, KEY_B), KeyClient(client, ADMIN)
        of_a = await a.start()
        of_b = await b.start()
        own = await admin.start()

        assert sorted(await admin.listed()) == sorted([of_a, of_b, own])
        assert await a.listed() == [of_a]
        assert await b.listed() == [of_b]
        assert_hidden(await a.get(f"/benchmarks/{own}"), own)
        for benchmark_id in (of_a, of_b):
            view = await admin.get(f"/benchmarks/{benchmark_id}")
            assert (view.status_code, view.json()["status"]) == (200, "running")
            stopped = await admin.delete(f"/benchmarks/{benchmark_id}")
            assert stopped.status_code in (200, 202), stopped.text
            await wait_finished(admin, benchmark_id)
            for path in run_routes(benchmark_id):
                assert (await admin.get(path)).status_code == 200, path
        assert (await a.get(f"/benchmarks/{of_a}")).json()["status"] == "cancelled"
        assert (await b.get(f"/benchmarks/{of_b}")).json()["status"] == "cancelled"
        # An admin key is a key like the others for the rest of the service.
        assert (await admin.get("/models")).status_code == 200


async def test_without_inbound_keys_every_caller_sees_and_cancels_every_run(
    tmp_path: Path, serve: Serve, hanging: HangAfter
) -> None:
    async with serve(make_settings(tmp_path)) as client:
        anyone, other = KeyClient(client, None), KeyClient(client, KEY_B)
        running = await anyone.start()

        assert await other.listed() == [running]
        assert (await other.get(f"/benchmarks/{running}")).json()["status"] == "running"
        assert (await other.delete(f"/benchmarks/{running}")).status_code in (200, 202)
        await wait_finished(anyone, running)
        for path in run_routes(running):
            assert (await anyone.get(path)).status_code == 200, path


async def test_runs_saved_without_an_owner_are_seen_by_admin_keys_only(
    tmp_path: Path, serve: Serve, answering: respx.Route
) -> None:
    async with serve(make_settings(tmp_path)) as client:
        unowned = str((await KeyClient(client, None).run(runs=1))["id"])

    async with serve(keyed(tmp_path)) as client:
        a, admin = KeyClient(client, KEY_A), KeyClient(client, ADMIN)
        assert await a.listed() == []
        for path in run_routes(unowned):
            assert_hidden(await a.get(path), unowned)
            assert (await admin.get(path)).status_code == 200, path
        assert await admin.listed() == [unowned]

    # Keys off again: everyone sees everything, owned runs included.
    async with serve(keyed(tmp_path)) as client:
        owned = str((await KeyClient(client, KEY_A).run(runs=1))["id"])
    async with serve(make_settings(tmp_path)) as client:
        assert sorted(await KeyClient(client, None).listed()) == sorted([unowned, owned])


@pytest.mark.parametrize("isolation", ["inline", "process"])
async def test_no_key_reaches_the_run_files_or_the_log(
    tmp_path: Path, serve: Serve, upstream: respx.MockRouter, models: respx.Route, isolation: str
) -> None:
    # An upstream that echoes what it was sent: the keys must still not land anywhere.
    echo = f"bad key {KEY_A} {ADMIN} {base64.b64encode(ADMIN.encode()).decode()}"
    upstream.post("/chat/completions").respond(400, json=error_body(400, echo))
    settings = keyed(tmp_path, benchmark_isolation=isolation)
    async with serve(settings) as client:
        ids = [str((await KeyClient(client, key).run(runs=1))["id"]) for key in (KEY_A, ADMIN)]
        a = KeyClient(client, KEY_A)
        # The owner was recorded, whichever process rewrote the run's state.
        assert await a.listed() == [ids[0]]
        assert_hidden(await a.get(f"/benchmarks/{ids[1]}"), ids[1])

    # Each run's record names its owner by a tag of the key, one tag per key.
    tags = [
        json.loads((settings.benchmarks_dir / f"{benchmark_id}.state").read_text())["owner"]
        for benchmark_id in ids
    ]
    assert all(re.fullmatch(r"[0-9a-f]{32}", tag) for tag in tags) and tags[0] != tags[1]
    files = sorted(settings.benchmarks_dir.iterdir())
    assert {path.suffix for path in files} >= {".csv", ".json", ".state"}
    texts = {path.name: path.read_text(encoding="utf-8") for path in files if path.is_file()}
    texts["server_logs.txt"] = read_log(settings)
    assert "bad key" in texts["server_logs.txt"]
    for key in (KEY_A, KEY_B, ADMIN):
        data = key.encode()
        forms = {
            key,
            data.hex(),
            data.hex().upper(),
            base64.b64encode(data).decode().rstrip("="),
            base64.urlsafe_b64encode(data).decode().rstrip("="),
        }
        for name, text in texts.items():
            for form in forms:
                assert form not in text, (name, key, form)


async def test_the_api_schema_shows_no_owner(tmp_path: Path, serve: Serve) -> None:
    async with serve(keyed(tmp_path)) as client:
        schema = (await client.get("/openapi.json")).json()["components"]["schemas"]

    assert "owner" not in schema["BenchmarkState"]["properties"]


def saved_run(directory: Path, started_at: datetime, owner: str | None) -> str:
    """The state record of a finished run, as its runner leaves it."""
    benchmark_id = new_benchmark_id(started_at, ["m/x"])
    progress = {"done": 1, "total": 1, "ok": 1, "failed": 0, "elapsed_seconds": 1.0}
    state: dict[str, Any] = {
        "id": benchmark_id,
        "status": "completed",
        "started_at": started_at.isoformat(),
        "updated_at": started_at.isoformat(),
        "finished_at": started_at.isoformat(),
        "parameters": {"models": ["m/x"], "prompts": 1},
        "progress": {**progress, "eta_seconds": None},
        "comparison": [],
        "files": store.files_of(benchmark_id).model_dump(by_alias=True),
        "owner": owner,
    }
    (directory / f"{benchmark_id}.state").write_text(json.dumps(state), encoding="utf-8")
    return benchmark_id


def test_a_limited_listing_gives_the_callers_newest_runs_past_newer_runs_of_others(
    tmp_path: Path,
) -> None:
    a, b = owner_tag(KEY_A), owner_tag(KEY_B)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    owners = [a, b, a, b, b, None]
    ids = [saved_run(tmp_path, start + timedelta(seconds=i), o) for i, o in enumerate(owners)]

    def listed(limit: int, caller: Caller) -> list[str]:
        return [item.id for item in store.list_runs(tmp_path, limit, caller)]

    assert listed(2, Caller(a)) == [ids[2], ids[0]]
    assert listed(10, Caller(b)) == [ids[4], ids[3], ids[1]]
    assert listed(2, Caller(a, sees_all=True)) == listed(2, EVERYONE) == [ids[5], ids[4]]
    assert listed(10, Caller(None)) == []


async def test_a_record_whose_owner_is_any_other_text_is_hidden_not_an_error(
    tmp_path: Path, serve: Serve
) -> None:
    settings = keyed(tmp_path)
    settings.benchmarks_dir.mkdir(parents=True)
    edited = saved_run(settings.benchmarks_dir, datetime.now(UTC), "propriétaire")
    async with serve(settings) as client:
        a, admin = KeyClient(client, KEY_A), KeyClient(client, ADMIN)

        assert_hidden(await a.get(f"/benchmarks/{edited}"), edited)
        assert await a.listed() == []
        assert (await admin.get(f"/benchmarks/{edited}")).status_code == 200
        assert await admin.listed() == [edited]


def test_a_key_listed_as_both_kinds_is_an_admin_key_and_each_key_has_its_own_tag(
    tmp_path: Path,
) -> None:
    settings = keyed(tmp_path, proxy_admin_keys=f"{ADMIN},{KEY_B}")

    # The key check keeps the last entry a key matches, as a dict keeps the last value.
    callers = {key.get_secret_value(): caller for key, caller in inbound_callers(settings)}

    assert {key: caller.sees_all for key, caller in callers.items()} == {
        KEY_A: False,
        KEY_B: True,
        ADMIN: True,
    }
    assert len({caller.owner for caller in callers.values()}) == 3
