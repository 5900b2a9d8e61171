"""The home pages read with no script: what a plain GET shows, and what the inbound keys let
through. The browser tests (tests/e2e/test_browser.py) drive the same pages in Chromium."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
import respx

from src.api.pages.render import last_failures_table
from src.config import Settings
from tests.helpers.app import Serve, make_settings
from tests.helpers.benchmarks import post_benchmark
from tests.helpers.html import parse
from tests.helpers.openrouter import GPT, LLAMA, MODELS_BODY, error_body, sse_response
from tests.helpers.results import request_result, run_rows

pytestmark = pytest.mark.anyio

KEY = "inbound-key-pages-0123456789"


@pytest.fixture
def chat_route(upstream: respx.MockRouter) -> respx.Route:
    upstream.get("/models").respond(json=MODELS_BODY)
    return upstream.post("/chat/completions").mock(side_effect=lambda _: sse_response())


async def test_label_and_notes_are_kept_in_the_state_the_summary_and_the_listing(
    client: httpx.AsyncClient, chat_route: respx.Route
) -> None:
    summary = (
        await post_benchmark(client, runs=1, label="  baseline, cold cache ", notes="a\r\nb\tc")
    ).json()

    state = (await client.get(f"/benchmarks/{summary['id']}")).json()
    [listed] = (await client.get("/benchmarks")).json()["benchmarks"]
    assert summary["parameters"]["label"] == "baseline, cold cache"
    assert summary["parameters"]["notes"] == "a\nb\tc"
    assert state["parameters"]["label"] == "baseline, cold cache"
    assert listed["label"] == "baseline, cold cache"
    assert [row["model"] for row in listed["comparison"]] == [GPT]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("label", "line\nbreak", "unprintable character U+000A"),
        ("label", "x" * 81, "at most 80 characters"),
        ("label", "   ", "at least 1 character"),
        ("label", "right-to-left \u202e override", "unprintable character U+202E"),
        ("notes", "bell \x07", "unprintable character U+0007"),
        ("notes", "n" * 2001, "at most 2000 characters"),
    ],
)
async def test_a_label_or_notes_that_is_not_printable_text_within_bounds_is_refused(
    client: httpx.AsyncClient, chat_route: respx.Route, field: str, value: str, message: str
) -> None:
    response = await post_benchmark(client, form={field: value}, runs=1)

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"][-1] == field and message in error["msg"]
    assert chat_route.call_count == 0


async def test_the_home_page_lists_runs_newest_first_with_label_series_and_p50(
    client: httpx.AsyncClient, chat_route: respx.Route
) -> None:
    first = (await post_benchmark(client, runs=1, label="first")).json()
    second = (await post_benchmark(client, models=[LLAMA], runs=1)).json()

    response = await client.get("/")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    rows = parse(response.text).tables["runs"]
    assert rows[0][1:5] == ["started (UTC)", "label", "status", "series"]
    assert [row[4] for row in rows[1:]] == [LLAMA, GPT]
    assert [row[2] for row in rows[1:]] == ["", "first"]
    assert [row[3] for row in rows[1:]] == ["completed", "completed"]
    assert rows[2][6] == f"{first['comparison'][0]['latency_p50']:.3f}"
    for run in (first, second):
        for link in (f"/runs/{run['id']}", run["files"]["csv_url"], run["files"]["report_url"]):
            assert f'href="{link}"' in response.text
    assert 'action="/compare"' in response.text


async def test_a_finished_runs_page_shows_its_report_charts_and_errors_by_type(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.get("/models").respond(json=MODELS_BODY)
    answers = iter(
        [sse_response(), httpx.Response(400, json=error_body(400, "bad")), sse_response()] * 2
    )
    upstream.post("/chat/completions").mock(side_effect=lambda _: next(answers))
    summary = (await post_benchmark(client, runs=1, concurrency=1)).json()

    response = await client.get(f"/runs/{summary['id']}")

    assert response.status_code == 200
    page = parse(response.text)
    for table in ("parameters", "comparison", "by-provider", "errors", "retries"):
        assert table in page.tables, table
    assert page.tables["errors"][1] == [GPT, "UpstreamStatusError", "1"]
    for chart in ("latency-cdf", "ttft-cdf", "latency-timeline"):
        assert f'<svg id="{chart}"' in response.text, chart
    # This upstream names no provider: nothing to draw, and the page says so.
    assert '<p id="provider-bars">Nothing to plot.</p>' in response.text
    assert "Closed loop" in response.text
    assert 'data-status="completed"' in response.text


async def test_the_compare_page_shows_each_measure_with_its_change_and_interval(
    client: httpx.AsyncClient, chat_route: respx.Route
) -> None:
    first = (await post_benchmark(client, runs=3, label="before")).json()
    second = (await post_benchmark(client, runs=3, label="after")).json()

    response = await client.get(f"/compare?id={second['id']}&id={first['id']}")

    assert response.status_code == 200
    page = parse(response.text)
    runs = page.tables["compared-runs"]
    assert [row[0] for row in runs[1:]] == ["baseline", "run 2"]  # the earliest first
    assert [row[2] for row in runs[1:]] == ["before", "after"]
    table = page.tables["series-0"]
    assert [row[0] for row in table[1:]] == [
        "latency p50 (s)", "latency p95 (s)", "ttft p50 (s)", "itl p50 (s)",
        "output tokens/s (tokens/s)", "cost per request (USD)",
    ]  # fmt: skip
    for row in table[1:]:
        assert row[-1] == "not measured" or row[-1] == "no difference" or "(" in row[-1]
        assert row[-2] == "—" or "…" in row[-2]
    assert '<svg id="compare-cdf-0"' in response.text


async def test_the_compare_page_asks_for_two_runs_and_refuses_an_unknown_one(
    client: httpx.AsyncClient, chat_route: respx.Route
) -> None:
    run = (await post_benchmark(client, runs=1)).json()

    one = await client.get(f"/compare?id={run['id']}")
    unknown = await client.get(f"/compare?id={run['id']}&id=20261126T101500Z_x_0123abcd")

    assert one.status_code == 200 and "Tick two or more runs" in one.text
    assert unknown.status_code == 404


async def test_the_form_shows_every_field_of_the_api_with_its_default_and_bounds(
    tmp_path: Path, serve: Serve, chat_route: respx.Route
) -> None:
    async with serve(make_settings(tmp_path, max_runs=42)) as client:
        document = (await client.get("/openapi.json")).json()
        response = await client.get("/new")

    assert response.status_code == 200
    schema = document["components"]["schemas"]["Body_create_benchmark_benchmark_post"]
    for name in schema["properties"]:
        assert f'name="{name}"' in response.text, name
    assert (
        'type="number" step="1" min="1" max="42" id="field-runs" name="runs" value="5"'
        in response.text
    )
    assert '<option value="true" selected>true</option>' in response.text  # stream
    assert 'enctype="multipart/form-data" novalidate' in response.text
    assert f'<option value="{GPT}">' in response.text  # the model ids, suggested


async def test_with_inbound_keys_a_page_without_the_key_is_the_key_prompt_and_no_data(
    tmp_path: Path, serve: Serve, chat_route: respx.Route
) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    async with serve(make_settings(tmp_path, proxy_api_keys=KEY)) as client:
        run = (
            await client.post(
                "/benchmark",
                headers=auth,
                files={"prompt_file": ("p.txt", b"one\n", "text/plain")},
                data={"model": GPT, "runs": "1", "label": "keyed run"},
            )
        ).json()
        pages = ["/", "/new", f"/runs/{run['id']}", f"/compare?id={run['id']}&id={run['id']}"]
        keyless = [await client.get(path) for path in pages]
        wrong = await client.get("/", headers={"Authorization": "Bearer not-the-key"})
        keyed = await client.get("/", headers=auth)
        script = await client.get("/ui/app.js")
        api = await client.get("/benchmarks")

    for response in [*keyless, wrong]:
        assert response.status_code == 200
        assert 'id="key-form"' in response.text and 'data-locked="true"' in response.text
        assert "keyed run" not in response.text
        assert 'id="runs"' not in response.text and 'id="parameters"' not in response.text
    assert "keyed run" in keyed.text and 'id="key-form"' not in keyed.text
    assert script.status_code == 200 and "sessionStorage" in script.text
    assert api.status_code == 401


async def test_pages_load_script_and_style_from_the_service_only(
    client: httpx.AsyncClient, chat_route: respx.Route
) -> None:
    response = await client.get("/")
    style = await client.get("/ui/app.css")

    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert "default-src 'none'" in policy
    assert "http://" not in response.text and "https://" not in response.text
    assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")


def test_the_last_failures_are_the_ten_latest_newest_first_and_escaped() -> None:
    records = [
        request_result(1.0, run=n, error_type="UpstreamStatusError", error=f"<b>no</b> {n}")
        for n in range(1, 13)
    ] + [request_result(0.5, run=13)]

    table = parse(last_failures_table(records)).tables["failures"]

    assert [row[2] for row in table[1:]] == [str(n) for n in range(12, 2, -1)]
    assert table[1][4:] == ["UpstreamStatusError", "<b>no</b> 12"]
    assert "<b>" not in last_failures_table(records)


async def test_with_inbound_keys_only_the_pages_themselves_pass_without_a_key(
    tmp_path: Path, serve: Serve, chat_route: respx.Route
) -> None:
    async with serve(make_settings(tmp_path, proxy_api_keys=KEY)) as client:
        others = [await client.get(path) for path in ("/newer", "/compare-all", "/runs")]
        pages = [await client.get(path) for path in ("/", "/new", "/compare", "/runs/x")]

    assert [response.status_code for response in others] == [401, 401, 401]
    assert all('id="key-form"' in response.text for response in pages)


async def test_latency_over_the_run_is_drawn_against_when_each_request_finished(
    client: httpx.AsyncClient, chat_route: respx.Route, settings: Settings
) -> None:
    summary = (await post_benchmark(client, runs=3)).json()

    rows = run_rows(settings.benchmarks_dir, summary)
    page = (await client.get(f"/runs/{summary['id']}")).text

    finished = [float(row["finished_seconds"]) for row in rows]
    assert finished == sorted(finished) and 0 < finished[-1] <= summary["wall_seconds"] + 0.5
    timeline = page.split('<svg id="latency-timeline"', 1)[1].split("</svg>", 1)[0]
    assert "seconds since the run started" in timeline
    assert timeline.count("<circle") == len(rows)


async def test_a_sweeps_page_shows_its_steps_curves_and_compares_step_by_step(
    client: httpx.AsyncClient, chat_route: respx.Route
) -> None:
    form = {"sweep": "concurrency", "sweep_values": "1,2", "runs": 2}
    first = (await post_benchmark(client, form=form, label="sweep a")).json()
    second = (await post_benchmark(client, form=form, label="sweep b")).json()

    run_page = await client.get(f"/runs/{first['id']}")
    compared = await client.get(f"/compare?id={first['id']}&id={second['id']}")

    assert run_page.status_code == 200
    sweep = run_page.text.split("<h2>Sweep</h2>", 1)[1]
    assert sweep.count("<polyline") >= 4  # the report's curves: latency and ttft, p50 and p95
    assert "<script" not in sweep
    headings = re.findall(r"<h2>([^<]*)</h2><p>Rows per run", compared.text)
    assert headings == [f"{GPT} · step 1", f"{GPT} · step 2"]
