"""The file run store on its own: what a run leaves in BENCHMARKS_DIR, what admission refuses
and why, which runs a listing shows, and what a caller may see."""

from __future__ import annotations

import errno
import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from src.schemas.benchmarks import (
    BenchmarkState,
    BenchmarkStatus,
    BenchmarkSummary,
)
from src.services.base.exceptions import (
    CapacityError,
    InsufficientStorageError,
    NotFoundError,
)
from src.services.benchmarker.results.csv_writer import write_csv
from src.services.benchmarker.results.file_utils import result_paths
from src.services.benchmarker.runs import file_store as store
from src.services.benchmarker.runs.file_store import FileRunStore
from src.services.benchmarker.runs.owners import EVERYONE, NOBODY, Caller
from src.services.benchmarker.runs.store import RunCaps
from tests.helpers.results import request_result
from tests.helpers.runs import NOW, run_id, state, summary_of

CAPS = RunCaps(max_running=2, max_in_flight=10)
ALICE = Caller(owner="alice")


def finished(directory: Path, benchmark_id: str) -> None:
    run = state(benchmark_id, status="completed")
    store.write_state(result_paths(directory, benchmark_id).state, run)
    store.write_summary(result_paths(directory, benchmark_id).json, summary_of(run))


# --- files ------------------------------------------------------------------------------------


def test_a_runs_files_are_named_inside_the_directory_and_downloaded_by_url() -> None:
    files = store.files_of("20260101T000000Z_m_0000000a")

    assert files.model_dump(by_alias=True) == {
        "csv": "20260101T000000Z_m_0000000a.csv",
        "json": "20260101T000000Z_m_0000000a.json",
        "csv_url": "/benchmarks/20260101T000000Z_m_0000000a/results.csv",
        "json_url": "/benchmarks/20260101T000000Z_m_0000000a/summary.json",
        "report_url": "/benchmarks/20260101T000000Z_m_0000000a/report",
    }


def test_a_summary_is_written_whole_once_and_never_replaced(tmp_path: Path) -> None:
    benchmark_id = run_id()
    path = result_paths(tmp_path / "new" / "benchmarks", benchmark_id).json
    summary = summary_of(state(benchmark_id))

    store.write_summary(path, summary)
    with pytest.raises(FileExistsError):
        store.write_summary(path, summary.model_copy(update={"wall_seconds": 99.0}))

    assert store.load_summary(tmp_path / "new" / "benchmarks", benchmark_id) == summary
    assert orjson.loads(path.read_bytes())["files"]["json"] == f"{benchmark_id}.json"
    assert path.read_text().startswith('{\n  "id"')  # indented for a person reading the file
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no partial left


def test_a_missing_summary_is_a_404(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=f"^No benchmark with id '{run_id()}'.$"):
        store.load_summary(tmp_path, run_id())


def test_the_state_record_keeps_the_owner_and_leaves_no_partial(tmp_path: Path) -> None:
    path = result_paths(tmp_path, run_id()).state
    run = state(run_id(), owner="alice")

    store.write_state(path, run)
    store.write_state(path, run.model_copy(update={"status": "completed"}))

    record = orjson.loads(path.read_bytes())
    assert record["owner"] == "alice"
    assert record["status"] == "completed"
    assert record["files"]["json"] == f"{run_id()}.json"  # by alias
    read = store.read_state(path)
    assert read is not None and read.owner == "alice" and read.status == "completed"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_a_failed_state_write_leaves_no_partial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_room(source: Path, target: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", no_room)
    with pytest.raises(OSError):
        store.write_state(tmp_path / f"{run_id()}.state", state(run_id()))

    assert list(tmp_path.iterdir()) == []


def test_an_unreadable_or_missing_state_is_none(tmp_path: Path) -> None:
    path = tmp_path / "x.state"
    assert store.read_state(path) is None
    path.write_text("{not json")
    assert store.read_state(path) is None


@pytest.mark.parametrize(
    ("status", "age", "seen"),
    [
        ("running", timedelta(seconds=5), "running"),
        ("running", timedelta(seconds=29), "running"),
        ("running", timedelta(seconds=31), "interrupted"),
        ("completed", timedelta(hours=5), "completed"),
        ("cancelled", timedelta(hours=5), "cancelled"),
    ],
)
def test_a_running_run_silent_for_30_s_is_interrupted(
    status: BenchmarkStatus, age: timedelta, seen: BenchmarkStatus
) -> None:
    assert store.effective_status(status, datetime.now(UTC) - age) == seen


def test_the_current_view_is_the_summary_once_written_else_the_state(tmp_path: Path) -> None:
    benchmark_id = run_id()
    stale = datetime.now(UTC) - timedelta(minutes=5)
    store.write_state(result_paths(tmp_path, benchmark_id).state, state(benchmark_id))

    view = store.current_view(tmp_path, benchmark_id)
    assert isinstance(view, BenchmarkState) and view.status == "running"

    store.write_state(
        result_paths(tmp_path, benchmark_id).state, state(benchmark_id, updated_at=stale)
    )
    view = store.current_view(tmp_path, benchmark_id)
    assert isinstance(view, BenchmarkState) and view.status == "interrupted"

    finished(tmp_path, benchmark_id)
    view = store.current_view(tmp_path, benchmark_id)
    assert isinstance(view, BenchmarkSummary) and view.status == "completed"


def test_no_files_is_a_404(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="^No benchmark with id"):
        store.current_view(tmp_path, run_id())


def test_a_run_is_seen_by_its_owner_and_by_whoever_sees_all(tmp_path: Path) -> None:
    mine, unowned = run_id(tail="0000000a"), run_id(tail="0000000b")
    store.write_state(result_paths(tmp_path, mine).state, state(mine, owner="alice"))
    store.write_state(result_paths(tmp_path, unowned).state, state(unowned))

    store.check_access(tmp_path, mine, ALICE)
    store.check_access(tmp_path, mine, EVERYONE)
    store.check_access(tmp_path, unowned, EVERYONE)
    store.check_access(tmp_path, run_id(tail="0000000c"), EVERYONE)  # sees all: not even read
    for caller, benchmark_id in [
        (Caller(owner="bob"), mine),
        (NOBODY, mine),
        (ALICE, unowned),
        (ALICE, run_id(tail="0000000c")),
    ]:
        with pytest.raises(NotFoundError, match=f"^No benchmark with id '{benchmark_id}'.$"):
            store.check_access(tmp_path, benchmark_id, caller)


def test_a_cancel_is_a_mark_its_runner_finds(tmp_path: Path) -> None:
    runs = FileRunStore(tmp_path)

    assert not runs.is_cancel_requested(run_id())
    runs.request_cancel(run_id())
    assert runs.is_cancel_requested(run_id())
    assert result_paths(tmp_path, run_id()).cancel.exists()
    runs.clear_cancel(run_id())
    runs.clear_cancel(run_id())  # twice is fine
    assert not runs.is_cancel_requested(run_id())


def test_a_cancel_that_cannot_be_written_is_a_507(tmp_path: Path) -> None:
    with pytest.raises(InsufficientStorageError, match=r"\(asking the run to stop\)"):
        store.request_cancel(tmp_path / "missing", run_id())


# --- admission --------------------------------------------------------------------------------


def running(directory: Path, n: int, concurrency: int = 1) -> list[str]:
    ids = [run_id(tail=f"{i:08x}") for i in range(n)]
    for benchmark_id in ids:
        store.write_state(
            result_paths(directory, benchmark_id).state,
            state(benchmark_id, concurrency=concurrency),
        )
    return ids


def test_a_run_is_admitted_with_its_state_and_reserve(tmp_path: Path) -> None:
    directory = tmp_path / "new" / "benchmarks"
    benchmark_id = run_id()

    FileRunStore(directory).admit(state(benchmark_id, owner="alice"), CAPS)

    paths = result_paths(directory, benchmark_id)
    saved = store.read_state(paths.state)
    assert saved is not None and saved.owner == "alice" and saved.status == "running"
    assert paths.reserve.stat().st_size > 0
    assert (directory / store.ADMISSION_LOCK).exists()


def test_past_max_running_a_run_is_refused_with_retry_after(tmp_path: Path) -> None:
    running(tmp_path, 2)

    with pytest.raises(CapacityError) as caught:
        store.admit(tmp_path, state(run_id(tail="000000ff")), CAPS)

    assert str(caught.value.detail) == (
        "2 benchmarks are running: MAX_RUNNING_BENCHMARKS=2. Try again when one has finished."
    )
    assert caught.value.retry_after == 30.0
    assert not result_paths(tmp_path, run_id(tail="000000ff")).state.exists()


def test_one_place_left_admits_one_run(tmp_path: Path) -> None:
    running(tmp_path, 1)

    store.check_capacity(tmp_path, 1, CAPS)
    store.admit(tmp_path, state(run_id(tail="000000ff")), CAPS)
    with pytest.raises(CapacityError):
        store.check_capacity(tmp_path, 1, CAPS)


def test_finished_stale_and_unreadable_runs_take_no_place(tmp_path: Path) -> None:
    done = run_id(tail="000000d0")
    finished(tmp_path, done)
    # A record still saying running, but with its summary written: finished.
    store.write_state(result_paths(tmp_path, done).state, state(done))
    lost = run_id(tail="000000d1")
    stale = datetime.now(UTC) - timedelta(minutes=2)
    store.write_state(result_paths(tmp_path, lost).state, state(lost, updated_at=stale))
    (tmp_path / f"{run_id(tail='000000d2')}.state").write_text("{")
    (tmp_path / "notes.txt").write_text("not a run")
    running(tmp_path, 1)

    store.check_capacity(tmp_path, 10 - 1, CAPS)  # one running run of concurrency 1


def test_requests_in_flight_past_max_inflight_total_are_refused(tmp_path: Path) -> None:
    running(tmp_path, 1, concurrency=4)

    store.check_capacity(tmp_path, 6, CAPS)  # 4 + 6 = 10: exactly the cap
    with pytest.raises(CapacityError) as caught:
        store.check_capacity(tmp_path, 7, CAPS)

    assert str(caught.value.detail) == (
        "Running benchmarks hold 4 requests in flight; 7 more would pass MAX_INFLIGHT_TOTAL=10. "
        "Lower concurrency or try again later."
    )
    assert caught.value.retry_after == 30.0


def test_live_runs_count_whatever_their_files_say(tmp_path: Path) -> None:
    ids = running(tmp_path, 1, concurrency=3)
    live = {ids[0]: 3, "20260101T000000Z_gone_0000000f": 5}

    with pytest.raises(CapacityError, match="^2 benchmarks are running"):
        store.check_capacity(tmp_path, 1, CAPS, live)
    with pytest.raises(CapacityError, match="hold 8 requests in flight"):
        FileRunStore(tmp_path).check_capacity(1, RunCaps(max_running=5, max_in_flight=8), live)


def test_a_missing_directory_has_room(tmp_path: Path) -> None:
    store.check_capacity(tmp_path / "missing", 10, CAPS)


def test_admission_gives_back_the_reserves_of_runs_nobody_writes(tmp_path: Path) -> None:
    alive, lost, done, hosted = (run_id(tail=f"0000000{c}") for c in "abcd")
    for benchmark_id in (alive, lost, done, hosted):
        result_paths(tmp_path, benchmark_id).reserve.write_bytes(b"r")
    stale = datetime.now(UTC) - timedelta(minutes=2)
    store.write_state(result_paths(tmp_path, alive).state, state(alive))
    store.write_state(result_paths(tmp_path, lost).state, state(lost, updated_at=stale))
    store.write_state(result_paths(tmp_path, done).state, state(done, status="completed"))
    store.write_state(result_paths(tmp_path, hosted).state, state(hosted, updated_at=stale))
    orphan = tmp_path / f"{run_id(tail='000000ee')}.reserve"
    orphan.write_bytes(b"r")

    store.admit(tmp_path, state(run_id(tail="000000ff")), RunCaps(5, 50), {hosted: 1})

    reserves = sorted(p.name for p in tmp_path.glob("*.reserve"))
    assert reserves == sorted(
        f"{benchmark_id}.reserve" for benchmark_id in (alive, hosted, run_id(tail="000000ff"))
    )


def test_a_disk_that_cannot_take_a_run_refuses_it_and_keeps_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(path: Path) -> None:
        path.write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store, "make_reserve", full)

    with pytest.raises(InsufficientStorageError) as caught:
        store.admit(tmp_path, state(run_id()), CAPS)

    assert str(caught.value.detail) == "no space left on BENCHMARKS_DIR (recording a new run)."
    assert sorted(p.name for p in tmp_path.iterdir()) == [store.ADMISSION_LOCK]


def test_a_directory_that_cannot_be_made_refuses_the_run(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")

    with pytest.raises(InsufficientStorageError, match=r"\(recording a new run\)\.$"):
        store.admit(tmp_path / "file" / "benchmarks", state(run_id()), CAPS)


# --- pruning ----------------------------------------------------------------------------------


def test_admission_prunes_finished_runs_older_than_keep_days(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = run_id(NOW - timedelta(days=3), tail="0000000a")
    recent = run_id(NOW - timedelta(days=1), tail="0000000b")
    old_unfinished = run_id(NOW - timedelta(days=3), tail="0000000c")
    finished(tmp_path, old)
    for suffix in (".csv", ".cancel", ".reserve"):
        (tmp_path / f"{old}{suffix}").write_text("x")
    finished(tmp_path, recent)
    store.write_state(
        result_paths(tmp_path, old_unfinished).state, state(old_unfinished, status="failed")
    )

    with caplog.at_level(logging.INFO, logger=store.__name__):
        store.admit(tmp_path, state(run_id(tail="000000ff")), RunCaps(2, 10, keep_days=2))

    names = {p.name for p in tmp_path.iterdir()}
    assert not any(name.startswith(old) for name in names)
    assert {f"{recent}.json", f"{recent}.state", f"{old_unfinished}.state"} <= names
    assert caplog.messages == ["BENCHMARKS PRUNED | 1 runs older than 2 days"]


def test_pruning_counts_what_it_removed_and_logs_nothing_when_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    finished(tmp_path, run_id(NOW - timedelta(hours=1)))

    with caplog.at_level(logging.INFO, logger=store.__name__):
        assert store.prune(tmp_path, 0.5) == 0
        assert store.prune(tmp_path, 0.01) == 1

    assert caplog.messages == ["BENCHMARKS PRUNED | 1 runs older than 0.01 days"]


def test_a_summary_without_a_state_record_is_pruned_and_odd_names_are_left(
    tmp_path: Path,
) -> None:
    old = run_id(NOW - timedelta(days=9))
    run = state(old, status="completed")
    store.write_summary(result_paths(tmp_path, old).json, summary_of(run))
    odd = ["20200101T000000Z_x.json", "readme.state", "20200101T000000Z_m_0000000a.txt"]
    for name in odd:
        (tmp_path / name).write_text("x")

    assert store.prune(tmp_path, 1) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(odd)


# --- listing ----------------------------------------------------------------------------------


def test_runs_are_listed_newest_first_up_to_the_limit(tmp_path: Path) -> None:
    ids = [run_id(NOW - timedelta(minutes=m)) for m in (3, 1, 2, 5, 4)]
    for benchmark_id in ids:
        store.write_state(result_paths(tmp_path, benchmark_id).state, state(benchmark_id))

    listed = [item.id for item in FileRunStore(tmp_path).list_runs(3)]

    assert listed == sorted(ids, reverse=True)[:3]


def test_runs_of_the_same_second_are_all_weighed_for_the_limit(tmp_path: Path) -> None:
    ids = [run_id(tail=f"0000000{c}") for c in "abc"]
    older = run_id(NOW - timedelta(seconds=1), tail="00000001")
    for benchmark_id in [*ids, older]:
        store.write_state(result_paths(tmp_path, benchmark_id).state, state(benchmark_id))

    assert [item.id for item in store.list_runs(tmp_path, 2)] == sorted(ids, reverse=True)[:2]
    assert [item.id for item in store.list_runs(tmp_path, 4)][-1] == older


def test_a_listing_shows_only_the_callers_runs_and_skips_unreadable_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mine, theirs, broken = (run_id(tail=f"0000000{c}") for c in "abc")
    store.write_state(result_paths(tmp_path, mine).state, state(mine, owner="alice"))
    store.write_state(result_paths(tmp_path, theirs).state, state(theirs, owner="bob"))
    (tmp_path / f"{broken}.state").write_text("{")

    with caplog.at_level(logging.WARNING, logger=store.__name__):
        assert [item.id for item in store.list_runs(tmp_path, 10, ALICE)] == [mine]
        assert [item.id for item in store.list_runs(tmp_path, 1, ALICE)] == [mine]
    assert [item.id for item in store.list_runs(tmp_path, 10)] == [theirs, mine]
    assert caplog.messages[0].startswith(f"Skipping unreadable benchmark record {broken}.state: ")
    assert "Invalid JSON" in caplog.messages[0]  # and why


def test_a_listing_of_no_directory_is_empty(tmp_path: Path) -> None:
    assert store.list_runs(tmp_path / "missing", 10) == []


def test_a_listed_run_counts_measured_requests_and_shows_its_files(tmp_path: Path) -> None:
    benchmark_id = run_id()
    stale = datetime.now(UTC) - timedelta(minutes=2)
    run = state(benchmark_id, done=5, total=8, warmup=2, updated_at=stale)
    store.write_state(
        result_paths(tmp_path, benchmark_id).state, run.model_copy(update={"cost": 0.5})
    )

    [item] = store.list_runs(tmp_path, 10)

    assert item.status == "interrupted"
    assert (item.requests, item.finished_requests) == (6, 3)
    assert item.cost == 0.5
    assert item.models == ["openai/gpt-4o"]
    assert item.started_at == run.started_at and item.finished_at is None
    assert item.files == store.files_of(benchmark_id)


def test_an_older_record_without_measured_counts_is_counted_from_its_progress(
    tmp_path: Path,
) -> None:
    benchmark_id = run_id()
    record = state(benchmark_id, status="completed", warmup=3).model_dump(
        mode="json", by_alias=True
    )
    record["progress"] = {
        "done": 10,
        "total": 12,
        "ok": 10,
        "failed": 0,
        "elapsed_seconds": 1,
        "eta_seconds": None,
    }
    (tmp_path / f"{benchmark_id}.state").write_bytes(orjson.dumps(record))
    other = run_id(tail="0000000b")
    record["id"], record["progress"]["total"], record["progress"]["done"] = other, None, 2
    (tmp_path / f"{other}.state").write_bytes(orjson.dumps(record))

    items = {item.id: item for item in store.list_runs(tmp_path, 10)}

    assert (items[benchmark_id].requests, items[benchmark_id].finished_requests) == (9, 7)
    assert (items[other].requests, items[other].finished_requests) == (None, 0)


def test_a_run_from_before_state_records_is_listed_from_its_summary(tmp_path: Path) -> None:
    benchmark_id = run_id()
    record = orjson.loads(summary_of(state(benchmark_id)).model_dump_json(by_alias=True))
    del record["progress"]
    record.update(requests=4, finished_requests=3)
    (tmp_path / f"{benchmark_id}.json").write_bytes(orjson.dumps(record))

    [item] = store.list_runs(tmp_path, 10)

    assert item.status == "completed"
    assert (item.requests, item.finished_requests) == (4, 3)
    assert item.finished_at == record_time(record["finished_at"])


def record_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- the store object ---------------------------------------------------------------------------


def test_the_store_reads_and_writes_through_the_same_files(tmp_path: Path) -> None:
    runs = FileRunStore(tmp_path)
    benchmark_id = run_id()
    run = state(benchmark_id, owner="alice")

    runs.write_state(benchmark_id, run)
    assert runs.read_state(benchmark_id) == run
    assert not runs.has_summary(benchmark_id)
    assert runs.current_view(benchmark_id) == run
    runs.check_access(benchmark_id, ALICE)
    with pytest.raises(NotFoundError):
        runs.check_access(benchmark_id, Caller(owner="bob"))

    summary = summary_of(run)
    runs.save_summary(benchmark_id, summary)
    assert runs.has_summary(benchmark_id)
    assert runs.load_summary(benchmark_id) == summary
    assert runs.current_view(benchmark_id) == summary
    assert result_paths(tmp_path, benchmark_id).json.is_file()
    assert [item.id for item in runs.list_runs(5, ALICE)] == [benchmark_id]
    assert runs.list_runs(5, Caller(owner="bob")) == []


def test_a_running_concurrency_sweep_holds_its_highest_step(tmp_path: Path) -> None:
    benchmark_id = run_id()
    run = state(benchmark_id, concurrency=1)
    swept = run.parameters.model_copy(update={"sweep": "concurrency", "sweep_values": [1.0, 6.0]})
    store.write_state(
        result_paths(tmp_path, benchmark_id).state, run.model_copy(update={"parameters": swept})
    )

    store.check_capacity(tmp_path, 4, CAPS)  # 6 + 4 = 10: exactly the cap
    with pytest.raises(CapacityError, match="hold 6 requests in flight; 5 more"):
        store.check_capacity(tmp_path, 5, CAPS)
    newcomer = state(run_id(tail="000000ff"))
    newcomer = newcomer.model_copy(
        update={
            "parameters": newcomer.parameters.model_copy(
                update={"sweep": "concurrency", "sweep_values": [1.0, 5.0]}
            )
        }
    )
    with pytest.raises(CapacityError, match="hold 6 requests in flight; 5 more"):
        store.admit(tmp_path, newcomer, CAPS)


def test_admission_counts_the_live_runs_too(tmp_path: Path) -> None:
    live = {"20260101T000000Z_gone_0000000f": 1}

    with pytest.raises(CapacityError, match="^1 benchmarks are running: MAX_RUNNING_BENCHMARKS=1"):
        FileRunStore(tmp_path).admit(state(run_id()), RunCaps(1, 10), live)
    with pytest.raises(CapacityError, match="^1 benchmarks are running"):
        store.admit(tmp_path, state(run_id()), RunCaps(1, 10), live)
    assert not result_paths(tmp_path, run_id()).state.exists()


def test_every_abandoned_reserve_is_given_back_whatever_the_listing_order(tmp_path: Path) -> None:
    hosted = [run_id(tail=f"0000001{i}") for i in range(4)]
    abandoned = [run_id(tail=f"0000002{i}") for i in range(4)]
    for benchmark_id in [*hosted, *abandoned]:
        result_paths(tmp_path, benchmark_id).reserve.write_bytes(b"r")

    store.admit(tmp_path, state(run_id(tail="000000ff")), RunCaps(9, 90), dict.fromkeys(hosted, 1))

    assert sorted(p.name for p in tmp_path.glob("*.reserve")) == sorted(
        f"{benchmark_id}.reserve" for benchmark_id in [*hosted, run_id(tail="000000ff")]
    )


def test_only_unfinished_running_runs_are_counted_whatever_the_listing_order(
    tmp_path: Path,
) -> None:
    for i in range(4):
        done = run_id(tail=f"0000003{i}")
        finished(tmp_path, done)
        store.write_state(result_paths(tmp_path, done).state, state(done))  # says running
    running(tmp_path, 3)

    with pytest.raises(CapacityError, match="^3 benchmarks are running"):
        store.check_capacity(tmp_path, 1, RunCaps(3, 100))
    store.check_capacity(tmp_path, 1, RunCaps(4, 100))


def test_pruning_counts_every_run_it_removed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for tail in ("0000000a", "0000000b"):
        finished(tmp_path, run_id(NOW - timedelta(days=3), tail=tail))

    with caplog.at_level(logging.INFO, logger=store.__name__):
        assert store.prune(tmp_path, 1) == 2

    assert caplog.messages == ["BENCHMARKS PRUNED | 2 runs older than 1 days"]


def test_an_old_summary_without_counts_lists_none_finished(tmp_path: Path) -> None:
    benchmark_id = run_id()
    record = orjson.loads(summary_of(state(benchmark_id)).model_dump_json(by_alias=True))
    del record["progress"], record["finished_requests"]
    (tmp_path / f"{benchmark_id}.json").write_bytes(orjson.dumps(record))

    [item] = store.list_runs(tmp_path, 10)

    assert item.finished_requests == 0


def test_a_runs_rows_are_read_back_from_its_csv_in_order(tmp_path: Path) -> None:
    runs = FileRunStore(tmp_path)
    benchmark_id = run_id()
    runs.write_state(benchmark_id, state(benchmark_id))
    rows = [request_result(0.5, prompt="p"), request_result(0.7, prompt="q", prompt_index=2)]

    write_csv(result_paths(tmp_path, benchmark_id).csv, rows)  # as the run writes them

    read = runs.read_rows(benchmark_id, ["p", "q"])
    assert [(r.prompt, r.latency_seconds) for r in read] == [("p", 0.5), ("q", 0.7)]


def test_pruning_removes_every_old_finished_run_and_keeps_every_other(tmp_path: Path) -> None:
    # Ten of each, so the order the directory lists them in cannot hide one left behind.
    old = [run_id(NOW - timedelta(days=9), tail=f"0000a{i:03d}") for i in range(10)]
    kept = [run_id(NOW - timedelta(hours=1), tail=f"0000b{i:03d}") for i in range(10)]
    for benchmark_id in old + kept:
        finished(tmp_path, benchmark_id)

    assert store.prune(tmp_path, 2) == 10
    assert {p.name.split(".")[0] for p in tmp_path.iterdir()} == set(kept)


def test_a_listed_run_shows_its_label_and_providers(tmp_path: Path) -> None:
    benchmark_id = run_id()
    run = state(benchmark_id)
    parameters = run.parameters.model_copy(update={"label": "night", "providers": ["a", "b"]})
    store.write_state(
        result_paths(tmp_path, benchmark_id).state,
        run.model_copy(update={"parameters": parameters}),
    )

    [item] = store.list_runs(tmp_path, 10)

    assert (item.label, item.providers) == ("night", ["a", "b"])
