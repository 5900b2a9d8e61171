"""One run's open-loop schedule split across runner processes (RUNNER_PROCESSES > 1).

The lead runner (shard 0) hosts the run as a lone runner does: the warm-up, closed-loop steps,
the CSV, the state record, cancellation and the summary. An open loop's schedule is split by
position: of its sends, shard i of k takes i, i + k, i + 2k, ..., each sent at its own offset
from one start that every shard shares (the monotonic clock is the machine's, the same in every
process). The other shards are runner processes that connect to the lead over a Unix socket:
the lead tells them when to start and at what rate, they send their share and stream back each
request's record as it finishes, and the lead records it as one of its own. One event loop
tops out at some rate of sends; k loops on k cores send more.

Each line on the socket is one JSON object: a shard says `{"shard": i}` once connected; the
lead sends `{"go": {...}}` per open loop and `{"stop": true}` to end one early; the shard
answers with `{"record": {...}}` per request, then `{"done": <offset of its last send>}`.
A shard whose connection ends (its lead is gone) stops and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel

from src.schemas.benchmarks import BenchmarkParameters, RequestRecord
from src.services.base.exceptions import RunnerFailedError
from src.services.base.timing import now
from src.services.benchmarker.load.plan import BenchmarkJob, BenchmarkPlan
from src.services.benchmarker.load.run_utils import (
    Executor,
    OnRecord,
    RequestContext,
    execute_conversation,
    execute_request,
    run_open_loop,
    sends_turns,
)
from src.services.benchmarker.load.schedule import arrival_offsets

logger = logging.getLogger(__name__)

T = TypeVar("T")
# A record carries its prompt's label, and a synthetic or dataset prompt can be long.
LINE_LIMIT = 16 * 1024 * 1024
# How long shards have to connect: a runner started cold needs the interpreter's start-up,
# far less than this even on a busy machine.
CONNECT_SECONDS = 30.0
# From the lead's `go` to the shared start: time for every shard to read it.
START_MARGIN_SECONDS = 0.1
# A stopped shard cancels its requests at once; its last records come well within this.
STOP_SECONDS = 10.0


def shard_count(processes: int, parameters: BenchmarkParameters) -> int:
    """How many runner processes share a run: 1 without an open loop, and never more than the
    fewest requests an open-loop step may hold in flight, so that every shard has a slot."""
    if processes < 2 or (parameters.rate is None and parameters.sweep not in ("rate", "auto")):
        return 1
    if parameters.sweep == "concurrency":
        return min(processes, int(min(parameters.sweep_values)))
    return min(processes, parameters.concurrency)


def every_kth(items: Iterable[T], index: int, count: int) -> Iterator[T]:
    """Shard `index` of `count`'s share of a schedule: items index, index + count, ..."""
    return itertools.islice(items, index, None, count)


def concurrency_share(concurrency: int, index: int, count: int) -> int:
    """Shard `index`'s part of the requests in flight: the parts add up to `concurrency`."""
    return concurrency // count + (1 if index < concurrency % count else 0)


class Go(BaseModel):
    """One open loop: from `start` (a `now()` reading), at `rate` sends per second."""

    start: float
    rate: float
    concurrency: int
    calibration: dict[str, float] = {}


async def send_share(
    plan: BenchmarkPlan,
    go: Go,
    index: int,
    count: int,
    execute: Executor,
    record: OnRecord,
) -> float | None:
    """Shard `index`'s share of one open loop; the offset of its last send."""
    parameters = plan.parameters
    return await run_open_loop(
        every_kth(plan.jobs(), index, count),
        every_kth(arrival_offsets(go.rate, parameters.arrival, parameters.seed), index, count),
        concurrency=go.concurrency,
        execute=execute,
        on_record=record,
        duration=parameters.duration,
        start=go.start,
    )


def _line(message: dict[str, Any]) -> bytes:
    return orjson.dumps(message) + b"\n"


@dataclasses.dataclass
class _Peer:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


@dataclasses.dataclass(eq=False)
class ShardHub:
    """The lead's side: the socket the other shards connect to, and the open loops shared
    with them."""

    path: str
    shards: int
    benchmark_id: str
    _peers: dict[int, _Peer] = dataclasses.field(default_factory=dict, init=False)
    _all_here: asyncio.Event = dataclasses.field(default_factory=asyncio.Event, init=False)
    _closing: asyncio.Event = dataclasses.field(default_factory=asyncio.Event, init=False)
    _server: asyncio.Server | None = dataclasses.field(default=None, init=False)

    async def open(self) -> None:
        self._server = await asyncio.start_unix_server(self._accept, self.path, limit=LINE_LIMIT)

    async def close(self) -> None:
        """Every shard sees its connection end, and exits."""
        self._closing.set()
        for peer in self._peers.values():
            peer.writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            index = int(orjson.loads(await reader.readline())["shard"])
        except (ValueError, KeyError, TypeError):
            index = 0
        if not 0 < index < self.shards or index in self._peers:
            writer.close()
            return
        self._peers[index] = _Peer(reader, writer)
        if len(self._peers) == self.shards - 1:
            self._all_here.set()
        await self._closing.wait()  # the connection lasts as long as the run

    async def open_loop(
        self, plan: BenchmarkPlan, go: Go, execute: Executor, record: OnRecord
    ) -> float | None:
        """One open loop (`go.concurrency` for the whole run), each shard sending its share and
        every record reaching `record`; the offset of the last send of any shard."""
        await self._wait_for_shards()
        go = go.model_copy(update={"start": now() + START_MARGIN_SECONDS})
        sends = [0] * self.shards

        def counted(index: int) -> OnRecord:
            def on_record(entry: RequestRecord) -> None:
                sends[index] += 1
                record(entry)

            return on_record

        for index, peer in self._peers.items():
            share = concurrency_share(go.concurrency, index, self.shards)
            peer.writer.write(
                _line({"go": go.model_copy(update={"concurrency": share}).model_dump()})
            )
        receivers = [
            asyncio.create_task(_receive(peer, counted(index)))
            for index, peer in self._peers.items()
        ]
        own = go.model_copy(
            update={"concurrency": concurrency_share(go.concurrency, 0, self.shards)}
        )
        try:
            last = await send_share(plan, own, 0, self.shards, execute, counted(0))
            lasts = [last, *await asyncio.gather(*receivers)]
        except BaseException:
            # Stopped (a DELETE, MAX_RUN_SECONDS, a stopping service), and so are the shards:
            # the records of the requests they finished still reach the CSV.
            for peer in self._peers.values():
                if not peer.writer.is_closing():
                    peer.writer.write(_line({"stop": True}))
            if receivers:
                await asyncio.wait(receivers, timeout=STOP_SECONDS)
            raise
        finally:
            for receiver in receivers:
                receiver.cancel()
            logger.info(
                "BENCHMARK SHARDS | id=%s | sends=%s",
                self.benchmark_id,
                ",".join(str(count) for count in sends),
            )
        return max((last for last in lasts if last is not None), default=None)

    async def _wait_for_shards(self) -> None:
        try:
            await asyncio.wait_for(self._all_here.wait(), CONNECT_SECONDS)
        except TimeoutError:
            missing = self.shards - 1 - len(self._peers)
            raise RunnerFailedError(
                f"{missing} of the run's {self.shards} runner processes did not start within "
                f"{CONNECT_SECONDS:g} s."
            ) from None


async def _receive(peer: _Peer, record: OnRecord) -> float | None:
    """A shard's records until its `done` (the offset of its last send) or its connection
    ends."""
    while line := await peer.reader.readline():
        message = orjson.loads(line)
        if "record" in message:
            record(RequestRecord.model_validate(message["record"]))
        elif "done" in message:
            done = message["done"]
            return None if done is None else float(done)
    logger.warning("BENCHMARK SHARD LOST | its connection ended before its share was sent")
    return None


async def serve_shard(path: str, index: int, count: int, context: RequestContext) -> None:
    """A shard's side: connect to the lead, then send this shard's share of each open loop it
    is told to, until the lead ends the connection."""
    reader, writer = await _connect(path)
    writer.write(_line({"shard": index}))
    turns = context.plan.parameters.turns

    def emit(entry: RequestRecord) -> None:
        writer.write(b'{"record":' + entry.model_dump_json().encode() + b"}\n")

    async def execute(job: BenchmarkJob, scheduled: float | None) -> RequestRecord:
        if sends_turns(job, turns):
            return await execute_conversation(context, job, scheduled, emit)
        return await execute_request(context, job, scheduled)

    async def send(go: Go) -> None:
        plan = dataclasses.replace(context.plan, calibration=go.calibration)
        last = None
        try:
            last = await send_share(plan, go, index, count, execute, emit)
        finally:
            if not writer.is_closing():
                writer.write(_line({"done": last}))

    sending: asyncio.Task[None] | None = None
    try:
        while line := await reader.readline():
            message = orjson.loads(line)
            if "go" in message:
                sending = asyncio.create_task(send(Go.model_validate(message["go"])))
            elif "stop" in message and sending is not None:
                sending.cancel()
    finally:
        if sending is not None:
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()


async def _connect(path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The lead's socket, once it listens: shard and lead start at the same time."""
    deadline = now() + CONNECT_SECONDS
    while True:
        try:
            return await asyncio.open_unix_connection(path, limit=LINE_LIMIT)
        except (FileNotFoundError, ConnectionRefusedError):
            if now() > deadline:
                raise
            await asyncio.sleep(0.02)
