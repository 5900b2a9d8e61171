"""`python -m src.cli benchmark ...` (or `make bench`): run a benchmark on a running service;
`python -m src.cli follow ID` (or `make follow ID=...`): follow one already started.

It submits a background run, shows a progress bar fed by the run's events stream, and prints
the comparison table with cost at the end (`--json`: the summary as JSON), then the report's
URL. Ctrl-C cancels the run (DELETE) before leaving; a second Ctrl-C meanwhile is ignored. The
exit status is 0 for a completed run, 1 for a failed or interrupted one (and for an error, said
in one line), 2 for a mistake in the command, 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import httpx
import orjson
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from src.schemas.benchmarks import WORKLOAD_FIELDS, BenchmarkParameters, series_label
from src.services.base.sse import ServerSentEvent, SSEDecoder
from src.services.benchmarker.results.statistics import KNEE_GOODPUT

EXIT_OK, EXIT_FAILED, EXIT_CANCELLED = 0, 1, 130
FORM_FIELDS = (
    "runs",
    "concurrency",
    "max_tokens",
    "rate",
    "arrival",
    "seed",
    "warmup",
    "duration",
    *WORKLOAD_FIELDS,
    "provider_sort",
    "ttft_slo",
    "latency_slo",
    "tpot_slo",
    "sweep",
    "sweep_values",
    "label",
)
STEP_COLUMNS = ("conc", "rate\n/s", "req\n/s", "p50\ns", "p95\ns", "ttft\np95 s", "good\n/s", "SLO")


def main(argv: list[str] | None = None) -> int:
    # A launcher (`uv run`) may start us with SIGINT ignored, which Python then keeps: Ctrl-C
    # must reach us as a KeyboardInterrupt to cancel the run.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "benchmark":
        _check_benchmark_args(parser, args)
    console = Console(stderr=True)
    headers = {"Authorization": f"Bearer {args.key}"} if args.key else {}
    try:
        with httpx.Client(base_url=args.url, headers=headers, timeout=httpx.Timeout(30.0)) as http:
            return _run(http, args, console)
    except CliError as exc:
        console.print(f"[red]{escape(str(exc))}[/red]", soft_wrap=True)
        return EXIT_FAILED
    except KeyboardInterrupt:
        console.print("Interrupted.")
        return EXIT_CANCELLED


def _check_benchmark_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """What argparse cannot say in one line, said with the `make bench` variable to set."""
    if not args.models.strip(", "):
        parser.error("benchmark needs --models (MODELS=), e.g. emulator/small")
    if args.file is None and args.dataset is None and args.prompt_tokens is None:
        parser.error(
            "benchmark needs prompts: --file (FILE=), --dataset (DATASET=) or --prompt-tokens "
            "(PROMPT_TOKENS=)"
        )


def _run(http: httpx.Client, args: argparse.Namespace, console: Console) -> int:
    """Submit (or find) the run, follow it to its end, print what it measured."""
    try:
        if args.command == "follow":
            benchmark_id = _existing(http, args.benchmark_id)
            said = f"Following [bold]{escape(benchmark_id)}[/bold]; Ctrl-C cancels it."
        else:
            benchmark_id = _submit(http, args)
            said = f"Benchmark [bold]{escape(benchmark_id)}[/bold] started; Ctrl-C cancels it."
        try:
            # Inside: a Ctrl-C as soon as the id is known still cancels the run.
            console.print(said, soft_wrap=True)
            summary = _follow(http, benchmark_id, console)
            code = EXIT_OK if summary.get("status") == "completed" else EXIT_FAILED
        except KeyboardInterrupt:
            # A terminal's Ctrl-C reaches make and uv as well, and an impatient user presses it
            # again: from here on it must not cut the cancellation or the table short.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            console.print("Cancelling…")
            summary = _cancel(http, benchmark_id)
            code = EXIT_CANCELLED
    except httpx.TransportError as exc:
        raise CliError(_unreachable(args.url, exc)) from None
    _print_result(summary, args, console)
    return code


def _print_result(summary: dict[str, Any], args: argparse.Namespace, console: Console) -> None:
    """The table (or the summary as JSON with --json), then where the report is."""
    report = f"Report: {args.url.rstrip('/')}/benchmarks/{summary.get('id')}/report"
    if args.json:
        sys.stdout.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode() + "\n")
        console.print(report, soft_wrap=True)  # stdout stays one JSON document
        return
    out = Console()
    print_comparison(summary, out)
    print_steps(summary, out)
    out.print(report, soft_wrap=True)


def _unreachable(url: str, error: httpx.TransportError) -> str:
    reason = re.sub(r"^\[Errno -?\d+\] ", "", str(error)) or type(error).__name__
    if isinstance(error, httpx.ConnectError):
        return f"Cannot reach the service at {url}: is it running (make run)? {reason}"
    return f"The service at {url} stopped answering ({type(error).__name__}): {reason}"


class CliError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """A mistake in the command is one line naming it, not the whole usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (--help lists the options)\n")


def _service_default(name: str) -> object:
    """What the service applies when the option is left out (its form's own default)."""
    return BenchmarkParameters.model_fields[name].default


def _with_default(text: str, name: str) -> str:
    return f"{text} (default: {_service_default(name)})"


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m src.cli")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    common = _Parser(add_help=False)
    host, port = os.environ.get("HOST", "127.0.0.1"), os.environ.get("PORT", "8000")
    default_url = os.environ.get("GATEWAY_URL") or f"http://{host}:{port}"
    common.add_argument(
        "--url", default=default_url, help="The service, or GATEWAY_URL (default: %(default)s)"
    )
    common.add_argument(
        "--key", default=os.environ.get("GATEWAY_KEY"), help="Inbound API key (GATEWAY_KEY)"
    )
    common.add_argument("--json", action="store_true", help="Print the summary as JSON")
    bench = commands.add_parser(
        "benchmark", parents=[common], help="Run a benchmark on a running service"
    )
    follow = commands.add_parser(
        "follow", parents=[common], help="Follow a run already started, to its table"
    )
    follow.add_argument("benchmark_id", metavar="ID", help="The run's id")
    _benchmark_options(bench)
    return parser


def _benchmark_options(bench: argparse.ArgumentParser) -> None:
    source = bench.add_mutually_exclusive_group()
    source.add_argument("--file", type=Path, help="Prompts, one per line")
    source.add_argument(
        "--dataset", type=Path, help="JSONL: chat requests or ShareGPT conversations"
    )
    source.add_argument(
        "--prompt-tokens", dest="prompt_tokens", type=int, help="Synthetic prompts of this length"
    )
    bench.add_argument("--prompt-tokens-stdev", dest="prompt_tokens_stdev", type=float)
    bench.add_argument("--prompts", type=int, help="Distinct synthetic prompts (default: 10)")
    bench.add_argument(
        "--output-tokens", dest="output_tokens", type=int, help="max_tokens of each request"
    )
    bench.add_argument("--output-tokens-stdev", dest="output_tokens_stdev", type=float)
    _defaulted_count(bench, "--turns", "Turns sent per dataset conversation")
    bench.add_argument(
        "--models",
        default="",
        help="Comma-separated model ids, e.g. emulator/small,emulator/large",
    )
    bench.add_argument(
        "--providers",
        help="Comma-separated provider slugs, each model x provider a pinned series; `all` for "
        "every provider of each model",
    )
    bench.add_argument(
        "--provider-sort", dest="provider_sort", choices=("price", "throughput", "latency")
    )
    _defaulted_count(bench, "--runs", "Requests per prompt and series")
    _defaulted_count(bench, "--concurrency", "Requests in flight at most")
    _defaulted_count(bench, "--max-tokens", "Per request")
    bench.add_argument("--rate", type=float, help="Requests per second (open loop)")
    bench.add_argument(
        "--arrival",
        choices=("constant", "poisson"),
        help=_with_default("With a rate: how requests are spaced", "arrival"),
    )
    _defaulted_count(bench, "--seed", "Of Poisson arrivals, synthetic prompts")
    _defaulted_count(bench, "--warmup", "Requests left out of the figures")
    bench.add_argument("--duration", type=float, help="Seconds to send for, instead of runs")
    bench.add_argument("--no-stream", action="store_true", help="Plain requests: no ttft")
    bench.add_argument("--label", help="A name for the run, shown with it")
    bench.add_argument("--ttft-slo", dest="ttft_slo", type=float, help="Seconds")
    bench.add_argument("--latency-slo", dest="latency_slo", type=float, help="Seconds")
    bench.add_argument("--tpot-slo", dest="tpot_slo", type=float, help="Seconds per token")
    bench.add_argument("--sweep", choices=("concurrency", "rate", "auto"))
    bench.add_argument(
        "--sweep-values", dest="sweep_values", help="Ascending, e.g. 1,2,4,8 (auto: a count)"
    )


def _defaulted_count(bench: argparse.ArgumentParser, flag: str, text: str) -> None:
    """An integer option whose help shows what the service takes without it."""
    name = flag.removeprefix("--").replace("-", "_")
    bench.add_argument(flag, dest=name, type=int, help=_with_default(text, name))


def _submit(http: httpx.Client, args: argparse.Namespace) -> str:
    form: dict[str, Any] = {"model": [m.strip() for m in args.models.split(",") if m.strip()]}
    if args.providers:
        form["provider"] = [p.strip() for p in args.providers.split(",") if p.strip()]
    for name in FORM_FIELDS:
        value = getattr(args, name)
        if value is not None:
            form[name] = str(value)
    if args.no_stream:
        form["stream"] = "false"
    response = http.post(
        "/benchmark", params={"background": "true"}, data=form, files=_upload(args)
    )
    if response.status_code != 202:
        raise CliError(
            f"The service refused the benchmark ({response.status_code}): {_detail(response)}"
        )
    return str(response.json()["id"])


def _existing(http: httpx.Client, benchmark_id: str) -> str:
    """The id of a run the service knows (and shows this key), before following it."""
    response = http.get(f"/benchmarks/{benchmark_id}")
    if response.status_code != 200:
        raise CliError(
            f"Cannot follow {benchmark_id} ({response.status_code}): {_detail(response)}"
        )
    return benchmark_id


def _upload(args: argparse.Namespace) -> dict[str, tuple[str, bytes, str]]:
    """The prompt file or the dataset, as the form's file field; nothing for synthetic prompts."""
    field, path, kind = (
        ("prompt_file", args.file, "text/plain")
        if args.file is not None
        else ("dataset_file", args.dataset, "application/x-ndjson")
    )
    if path is None:
        return {}
    try:
        return {field: (path.name, path.read_bytes(), kind)}
    except OSError as exc:
        raise CliError(f"Cannot read {path}: {exc.strerror}") from exc


def _follow(http: httpx.Client, benchmark_id: str, console: Console) -> dict[str, Any]:
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("requests", total=None, detail="")
        steps: dict[int, TaskID] = {}
        for event in _events(http, benchmark_id):
            data: dict[str, Any] = orjson.loads(event.data)
            if event.event == "summary":
                done = _requests_done(data)
                bar.update(task, completed=done, total=done, detail=data["status"])
                for step_task in steps.values():
                    _complete(bar, step_task)
                return data
            progress = data["progress"]
            eta = progress.get("eta_seconds")
            bar.update(
                task,
                completed=progress["done"],
                total=progress["total"],
                detail=f"{progress['ok']} ok, {progress['failed']} failed"
                + (f", ETA {eta:.0f}s" if eta is not None else ""),
            )
            _step_bars(bar, steps, progress)
    raise CliError("The events stream ended without a summary.")


def _step_bars(bar: Progress, steps: dict[int, TaskID], progress: dict[str, Any]) -> None:
    """With a sweep: one bar per step, each earlier one filled once a later one has begun."""
    step = progress.get("step")
    if not step:
        return
    if step not in steps:
        for earlier in steps.values():
            _complete(bar, earlier)
        description = f"step {step}/{progress.get('steps') or '?'}"
        steps[step] = bar.add_task(description, total=progress.get("step_total"), detail="")
    bar.update(steps[step], completed=progress.get("step_done") or 0)


def _complete(bar: Progress, task: TaskID) -> None:
    done = bar.tasks[bar.task_ids.index(task)].completed
    bar.update(task, total=done, completed=done)


def _requests_done(ended: dict[str, Any]) -> int:
    # A summary and a state record (a run that ended without its summary) share the block.
    return int(ended["progress"]["done"])


def _events(http: httpx.Client, benchmark_id: str) -> Iterator[ServerSentEvent]:
    decoder = SSEDecoder()
    timeout = httpx.Timeout(30.0, read=None)  # a run may stay quiet between two events
    with http.stream("GET", f"/benchmarks/{benchmark_id}/events", timeout=timeout) as response:
        if response.status_code != 200:
            response.read()
            raise CliError(
                f"Cannot follow {benchmark_id} ({response.status_code}): {_detail(response)}"
            )
        for chunk in response.iter_bytes():
            yield from decoder.feed(chunk)


def _cancel(http: httpx.Client, benchmark_id: str) -> dict[str, Any]:
    response = http.delete(f"/benchmarks/{benchmark_id}")
    if response.status_code in (200, 202):
        body: dict[str, Any] = response.json()
        return body
    return {"id": benchmark_id, "status": "unknown", "comparison": []}


def print_comparison(summary: dict[str, Any], console: Console) -> None:
    # Two-line headings and collapsed padding keep the table inside 80 columns, so figures
    # are never cut to "0.…"; a long model name folds instead.
    table = Table(
        title=f"{summary.get('id')}: {summary.get('status')}",
        box=box.SIMPLE_HEAVY,
        collapse_padding=True,
    )
    columns = (
        ("p50\ns", "latency_p50", 3),
        ("p95\ns", "latency_p95", 3),
        ("ttft\np50 s", "ttft_p50", 3),
        ("itl\np50 s", "itl_p50", 3),
        ("tokens\n/s", "output_tokens_per_second", 1),
        ("cost\nUSD", "cost", 5),
    )
    # The provider goes with the model, in the one column that folds.
    table.add_column("model @ provider", overflow="fold", min_width=14)
    for title in ("ok", "failed", *(title for title, _, _ in columns)):
        table.add_column(title, justify="right", no_wrap=True)
    for row in summary.get("comparison", []):
        cells = [_series(row), str(row["ok"]), str(row["failed"])]
        cells += [_number(row.get(key), digits) for _, key, digits in columns]
        table.add_row(*cells)
    console.print(table)
    for series in summary.get("models", []):
        label = series_label(str(series.get("model")), series.get("provider"))
        for warning in series.get("warnings", []):
            console.print(f"[yellow]{escape(label)}: {escape(str(warning))}[/yellow]")
    cost = summary.get("cost")
    unknown = summary.get("cost_unknown") or 0
    shown = "unknown" if cost is None else f"${cost:.5f}"
    if unknown and cost is not None:
        shown += f" + {unknown} request(s) of unknown cost"
    console.print(f"Total cost: {shown}")
    print_lengths(summary, console)
    if summary.get("error"):
        console.print(f"[red]Failed: {escape(str(summary['error']))}[/red]", soft_wrap=True)


def print_lengths(summary: dict[str, Any], console: Console) -> None:
    """Per series, the token lengths achieved beside those asked for, and per-turn ttft."""
    for stats in summary.get("models", []):
        lengths = stats.get("lengths")
        if not lengths:
            continue
        parts = []
        for name in ("input", "output"):
            length = lengths[name]
            target = "" if length["target"] is None else f" (target {length['target']})"
            parts.append(
                f"{name} tokens mean {_number(length['mean'], 1)}, "
                f"p90 {_number(length['p90'], 1)}{target}"
            )
        parts.append(f"{lengths['early_finishes']} ended before max_tokens")
        label = series_label(str(stats["model"]), stats.get("provider"))
        console.print(f"{escape(label)}: " + "; ".join(parts), soft_wrap=True)
        turns = stats.get("per_turn") or []
        if turns:
            shown = ", ".join(f"{t['turn']}: {_number(t['ttft']['p50'], 3)}" for t in turns)
            console.print(f"  ttft p50 s by turn: {shown}", soft_wrap=True)


def _series(row: dict[str, Any]) -> str:
    label = series_label(str(row["model"]), row.get("provider"))
    answered = row.get("providers_answered") or 0
    return label if row.get("provider") or answered < 2 else f"{label} (mixed: {answered})"


def print_steps(summary: dict[str, Any], console: Console) -> None:
    """A sweep's steps, per series: the load, what it achieved, and whether it met the SLOs."""
    steps = summary.get("steps")
    if not steps:
        return
    knees = {
        (point["model"], point.get("provider")): point["step"]
        for point in summary.get("knee") or []
    }
    table = Table(title="Sweep", box=box.SIMPLE_HEAVY, collapse_padding=True)
    table.add_column("step", justify="right")
    table.add_column("model @ provider", overflow="fold", min_width=14)
    for title in STEP_COLUMNS:
        table.add_column(title, justify="right", no_wrap=True)
    for step in steps:
        for stats in step["models"]:
            met = _met(stats.get("goodput"))
            if knees.get((stats["model"], stats.get("provider"))) == step["step"]:
                met += " knee"
            table.add_row(
                str(step["step"]),
                series_label(str(stats["model"]), stats.get("provider")),
                str(step["concurrency"]),
                _number(step.get("rate"), 2),
                _number(stats.get("requests_per_second"), 2),
                _number(stats["latency"].get("p50"), 3),
                _number(stats["latency"].get("p95"), 3),
                _number(stats["ttft"].get("p95"), 3),
                _number(stats.get("goodput_per_second"), 2),
                met,
            )
    console.print(table)


def _met(goodput: object) -> str:
    if not isinstance(goodput, int | float):
        return "—"
    return "met" if goodput >= KNEE_GOODPUT else "missed"


def _number(value: object, digits: int) -> str:
    return "—" if not isinstance(value, int | float) else f"{value:.{digits}f}"


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    detail = body.get("detail") if isinstance(body, dict) else body
    if isinstance(detail, list):  # a form the service's validation refused: field by field
        return "; ".join(_field_error(item) for item in detail)[:300]
    return detail if isinstance(detail, str) else orjson.dumps(detail).decode()[:300]


def _field_error(item: object) -> str:
    if not isinstance(item, dict):
        return str(item)
    place = [str(part) for part in item.get("loc", ()) if part not in ("body", "query")]
    return f"{'.'.join(place) or 'request'}: {item.get('msg', '')}"


if __name__ == "__main__":
    sys.exit(main())
