from __future__ import annotations

import asyncio
import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from src.config import REPO_ROOT
from src.schemas.benchmarks import BenchmarkSummary, RequestRecord
from src.services.base.exceptions import InvalidInputError, NotFoundError, PayloadTooLargeError
from src.services.benchmarker.results.csv_writer import (
    CSV_COLUMNS,
    CsvResultWriter,
    neutralize_formula,
)
from src.services.benchmarker.results.file_utils import (
    BENCHMARK_ID_PATTERN,
    READ_CHUNK_BYTES,
    model_slug,
    new_benchmark_id,
    parse_prompts,
    read_upload,
    result_paths,
)
from src.services.benchmarker.results.summary import RunClock, RunRecords, build_summary
from src.services.benchmarker.runs.disk import DiskHealth
from src.services.benchmarker.runs.file_store import list_runs, write_summary
from tests.helpers.results import plan_of, request_result
from tests.helpers.uploads import FakeUpload

pytestmark = pytest.mark.anyio

STARTED = datetime(2026, 11, 26, 10, 15, 0, tzinfo=UTC)


def test_prompts_are_one_per_line_with_bom_crlf_and_blank_lines_handled() -> None:
    data = "\ufeffWhy is the sky blue?\r\n\r\n  Say hi  \r\n\t\nLast line".encode()

    assert parse_prompts(data) == ["Why is the sky blue?", "Say hi", "Last line"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\n  \r\n\t\n", "only blank lines"),
        ("caf\u00e9".encode("latin-1"), "not valid UTF-8"),
        (b"\xff\xfe\x00h\x00i", "NUL"),
        (b"one\x00two\n", "NUL"),
    ],
)
def test_unusable_prompt_files_are_refused_with_a_clear_message(data: bytes, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_prompts(data)


async def test_an_upload_at_the_limit_is_read() -> None:
    assert len(await read_upload(FakeUpload(size=1000), max_bytes=1000)) == 1000


async def test_an_oversized_upload_is_refused_without_reading_it_whole() -> None:
    upload = FakeUpload(size=50 * 1024 * 1024)

    with pytest.raises(PayloadTooLargeError, match="MAX_UPLOAD_BYTES=1000"):
        await read_upload(upload, max_bytes=1000)

    assert upload.read_bytes <= 1000 + READ_CHUNK_BYTES


def test_model_slug_replaces_unsafe_characters_and_joins_models() -> None:
    assert model_slug(["openai/gpt-4o", "meta/llama-3:free"]) == "openai-gpt-4o+meta-llama-3-free"
    assert model_slug(["ünï/cøde model"]) == "-n--c-de-model"
    assert len(model_slug(["x" * 300])) == 80


def test_benchmark_ids_are_unique_within_one_second() -> None:
    first = new_benchmark_id(STARTED, ["openai/gpt-4o"])
    second = new_benchmark_id(STARTED, ["openai/gpt-4o"])

    assert first != second
    assert first.startswith("20261126T101500Z_openai-gpt-4o_")
    assert BENCHMARK_ID_PATTERN.fullmatch(first)


@pytest.mark.parametrize(
    "benchmark_id",
    [
        "..",
        "../etc/passwd",
        "20261126T101500Z_a/../../b_0123abcd",
        "20261126T101500Z_a_0123abcd/../../x",
        "/etc/passwd",
        "20261126T101500Z__0123abcd",
        "20261126T101500Z_a_0123ABCD",
        "x" * 300,
    ],
)
def test_result_paths_refuse_ids_that_are_not_ours(tmp_path: Path, benchmark_id: str) -> None:
    with pytest.raises(NotFoundError):
        result_paths(tmp_path, benchmark_id)


def test_result_paths_stay_in_the_directory(tmp_path: Path) -> None:
    paths = result_paths(tmp_path, "20261126T101500Z_a..b_0123abcd")

    assert paths.csv == tmp_path.resolve() / "20261126T101500Z_a..b_0123abcd.csv"
    assert paths.json.parent == tmp_path.resolve()


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tcmd", "'\tcmd"),
        ("Why = 42?", "Why = 42?"),
    ],
)
def test_formula_like_cells_are_neutralized(cell: str, expected: str) -> None:
    assert neutralize_formula(cell) == expected


def result(index: int, *, error: bool = False, prompt: str = "p") -> RequestRecord:
    return request_result(
        0.25,
        prompt_index=index,
        prompt=prompt,
        ttft=None if error else 0.125,
        prompt_tokens=3,
        completion=4,
        total=7,
        error_type="UpstreamStatusError" if error else None,
        error="Upstream returned 500: down",
    )


async def test_csv_writer_writes_the_header_and_every_row(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "run.csv"
    writer = await CsvResultWriter.create(path, DiskHealth("test", 1.0))
    writer.put(result(1, prompt="=1+1"))
    writer.put(result(2, error=True))
    await writer.close()

    with path.open(newline="", encoding="utf-8") as file:
        rows = list(csv.reader(file))
    assert rows[0] == list(CSV_COLUMNS)
    assert dict(zip(CSV_COLUMNS, rows[1], strict=True)) == {
        "model": "m/x",
        "pinned_provider": "",
        "provider": "",
        "generation_id": "",
        "generation_record": "",
        "upstream_latency_seconds": "",
        "upstream_generation_seconds": "",
        "native_prompt_tokens": "",
        "native_completion_tokens": "",
        "generation_cost": "",
        "prompt_index": "1",
        "prompt": "'=1+1",
        "run": "1",
        "status": "200",
        "latency_seconds": "0.250000",
        "ttft_seconds": "0.125000",
        "prompt_tokens": "3",
        "completion_tokens": "4",
        "tokens_used": "7",
        "attempts": "1",
        "total_seconds": "0.250000",
        "finish_reason": "",
        "warmup": "false",
        "send_lag_seconds": "",
        "scheduled_latency_seconds": "",
        "chunks": "1",
        "itl_avg_seconds": "",
        "tpot_seconds": "0.041667",
        "cost": "",
        "cost_source": "",
        "error": "",
        "turn": "1",
        "step": "",
        "finished_seconds": "",
    }
    assert rows[2][4] == "502"
    assert rows[2][6] == ""
    assert rows[2][CSV_COLUMNS.index("error")] == "UpstreamStatusError: Upstream returned 500: down"


def test_csv_columns_keep_the_older_positions_for_readers_by_position() -> None:
    # The first columns never move; providers' columns come before `error`; then `turn`,
    # `step` and `finished_seconds`.
    assert CSV_COLUMNS[:4] == ("model", "prompt_index", "prompt", "run")
    assert CSV_COLUMNS[CSV_COLUMNS.index("cost_source") + 1 :] == (
        "pinned_provider",
        "provider",
        "generation_id",
        "generation_record",
        "upstream_latency_seconds",
        "upstream_generation_seconds",
        "native_prompt_tokens",
        "native_completion_tokens",
        "generation_cost",
        "error",
        "turn",
        "step",
        "finished_seconds",
    )


async def test_csv_writer_flushes_rows_before_it_is_closed(tmp_path: Path) -> None:
    path = tmp_path / "run.csv"
    writer = await CsvResultWriter.create(path, DiskHealth("test", 1.0))
    try:
        writer.put(result(1))
        writer.put(result(2))

        def lines() -> int:
            return len(path.read_text(encoding="utf-8").splitlines())

        # The rows reach the disk through a thread: wait for them, as long as a busy machine
        # may need, while the writer is still open.
        for _ in range(2000):
            if lines() == 3:
                break
            await asyncio.sleep(0.01)
        assert lines() == 3
    finally:
        await writer.close()


async def test_result_files_are_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "run.csv"
    path.write_text("precious", encoding="utf-8")

    with pytest.raises(FileExistsError):
        await CsvResultWriter.create(path, DiskHealth("test", 1.0))
    with pytest.raises(FileExistsError):
        write_summary(path, summary("20261126T101500Z_m-x_0123abcd", STARTED, tmp_path))
    assert path.read_text(encoding="utf-8") == "precious"


def summary(benchmark_id: str, started_at: datetime, directory: Path) -> BenchmarkSummary:
    plan = plan_of(["m/x"], ["p"], 1, concurrency=1, max_tokens=8, stream=False)
    return build_summary(
        RunRecords(benchmark_id, "completed", plan, [result(1)], RunClock(started_at, 1.0))
    )


def save(directory: Path, benchmark_id: str, started_at: datetime) -> None:
    write_summary(directory / f"{benchmark_id}.json", summary(benchmark_id, started_at, directory))


def test_list_summaries_is_newest_first_and_skips_foreign_files(tmp_path: Path) -> None:
    later = STARTED + timedelta(milliseconds=300)  # same second: the name cannot tell them apart
    save(tmp_path, "20261126T101500Z_m-x_ffffffff", STARTED)
    save(tmp_path, "20261126T101500Z_m-x_00000000", later)
    save(tmp_path, "20261125T090000Z_m-x_0123abcd", STARTED - timedelta(days=1))
    (tmp_path / "20261127T000000Z_m-x_0123abcd.json").write_text("{not json", encoding="utf-8")
    (tmp_path / "notes.json").write_text("{}", encoding="utf-8")

    ids = [item.id for item in list_runs(tmp_path, limit=10)]

    assert ids == [
        "20261126T101500Z_m-x_00000000",
        "20261126T101500Z_m-x_ffffffff",
        "20261125T090000Z_m-x_0123abcd",
    ]


def test_list_summaries_keeps_the_newest_within_the_limit(tmp_path: Path) -> None:
    later = STARTED + timedelta(milliseconds=300)
    save(tmp_path, "20261126T101500Z_m-x_ffffffff", STARTED)
    save(tmp_path, "20261126T101500Z_m-x_00000000", later)
    save(tmp_path, "20261125T090000Z_m-x_0123abcd", STARTED - timedelta(days=1))

    assert [item.id for item in list_runs(tmp_path, limit=1)] == ["20261126T101500Z_m-x_00000000"]


def test_list_summaries_of_a_missing_directory_is_empty(tmp_path: Path) -> None:
    assert list_runs(tmp_path / "nowhere", limit=5) == []


@pytest.mark.parametrize(("name", "count"), [("en.txt", 5), ("ru.txt", 4)])
def test_the_sample_prompt_files_parse(name: str, count: int) -> None:
    sample = REPO_ROOT / "prompts" / name

    assert len(parse_prompts(sample.read_bytes())) == count


def test_a_summary_never_replaces_an_existing_one_and_leaves_no_partial_file(
    tmp_path: Path,
) -> None:
    benchmark_id = "20261126T101500Z_m_0123abcd"
    path = tmp_path / f"{benchmark_id}.json"
    path.write_text("earlier", encoding="utf-8")

    with pytest.raises(FileExistsError):
        write_summary(path, summary(benchmark_id, datetime.now(UTC), tmp_path))

    assert path.read_text(encoding="utf-8") == "earlier"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
