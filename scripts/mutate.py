"""Mutation testing, one module at a time, against only the tests that cover it.

    python scripts/mutate.py                 # every module in turn, then the table
    python scripts/mutate.py sse             # one module, by name ...
    python scripts/mutate.py app/src/redaction.py   # ... or by path
    python scripts/mutate.py --list          # the modules and their tests
    python scripts/mutate.py --children 2 transport   # two mutants at a time

Each module runs in its own folder, `mutants/<name>/`, which links to the repository and holds
mutmut's copy of the tree (`mutants/<name>/mutants/`): the modules never share mutmut's cache,
and a run always starts afresh, so its figures are today's. mutmut runs in a child process per
module (it keeps global state and imports the mutated `src` package) with one worker by
default, so a 2-core machine stays usable; `--children N` runs N mutants at a time. Inside a
module, mutmut maps every mutated function to the tests that call it and runs only those for
each mutant.

The table (module, mutants, killed, survived, timeout, kill rate, wall time) is printed at the
end and kept in `mutants/summary.json`; every survivor is listed with its diff.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
MUTANTS_DIR = REPO_ROOT / "mutants"
DIFFS = "survivors.diff"
# What a module's folder links to: the code, the tests, and what the tests read from the root.
LINKED = ("app", "tests", "prompts", "pyproject.toml", "README.md")


@dataclass(frozen=True)
class Module:
    name: str
    path: str
    tests: tuple[str, ...]


MODULES: tuple[Module, ...] = (
    Module("sse", "app/src/services/base/sse.py", ("tests/test_sse_decoder.py",)),
    Module(
        "statistics",
        "app/src/services/benchmarker/results/statistics.py",
        ("tests/test_statistics.py",),
    ),
    Module(
        "schedule", "app/src/services/benchmarker/load/schedule.py", ("tests/test_schedule.py",)
    ),
    Module(
        "run_utils",
        "app/src/services/benchmarker/load/run_utils.py",
        (
            "tests/test_benchmark_runner.py",
            "tests/test_benchmark_jobs.py",
            "tests/test_benchmark_api.py",
            # Synthetic prompts, datasets and multi-turn conversations.
            "tests/test_workloads.py",
        ),
    ),
    Module(
        "redaction",
        "app/src/redaction.py",
        (
            "tests/test_redaction.py",
            "tests/test_logging.py",
            "tests/test_security_edges.py",
            "tests/test_benchmark_runner.py",
        ),
    ),
    Module(
        "guards",
        "app/src/api/gate/guards.py",
        ("tests/test_guards.py", "tests/test_hardening.py", "tests/test_security_edges.py"),
    ),
    Module(
        "http_limits",
        "app/src/api/gate/http_limits.py",
        ("tests/test_http_limits.py", "tests/test_http_limits_bodies.py"),
    ),
    Module("relay", "app/src/services/generation/relay.py", ("tests/test_openai.py",)),
    Module(
        "openrouter_client",
        "app/src/services/openrouter/client.py",
        (
            "tests/test_openrouter_client.py",
            "tests/test_openai.py",
            "tests/test_models.py",
            "tests/test_generate.py",
            "tests/test_stream.py",
        ),
    ),
    Module(
        "store",
        "app/src/services/benchmarker/runs/file_store.py",
        ("tests/test_file_store.py", "tests/test_benchmark_files.py"),
    ),
    Module(
        "service",
        "app/src/services/benchmarker/runs/service.py",
        (
            "tests/test_benchmark_service.py",
            "tests/test_benchmark_api.py",
            # Events, result files, records and cancelling, through both run stores (not
            # tests/test_benchmark_jobs.py: its whole benchmarks make a run take hours).
            "tests/test_benchmark_events_fanout.py",
            "tests/test_benchmark_files.py",
            "tests/test_redis_store.py",
        ),
    ),
    Module(
        "client",
        "app/src/services/base/client.py",
        ("tests/test_base_client.py", "tests/test_retries.py", "tests/test_measurement.py"),
    ),
    Module(
        "transport",
        "app/src/services/base/transport.py",
        (
            "tests/test_transport.py",
            "tests/test_transport_exchanges.py",
            "tests/test_transport_headers.py",
            "tests/test_transport_resend.py",
            "tests/test_transport_timeouts.py",
            "tests/test_transport_edges.py",
            "tests/test_transport_flow.py",
            # The resolver the pool is given reaches the connection setup; requests to a proxy.
            "tests/test_connect.py",
            "tests/test_connect_tunnels.py",
            "tests/test_proxies.py::test_a_forward_proxy_receives_the_absolute_url_and_the_credentials",
            "tests/test_proxies.py::test_the_proxy_variables_are_read_when_the_transport_is_built",
        ),
    ),
    Module(
        "connect",
        "app/src/services/base/connect.py",
        ("tests/test_connect.py", "tests/test_connect_tunnels.py", "tests/test_tls.py"),
    ),
    Module(
        "proxies",
        "app/src/services/base/proxies.py",
        ("tests/test_proxy_rules.py", "tests/test_proxies.py"),
    ),
)

# mutmut's exit codes, as its `stats.status_by_exit_code` reads them.
KILLED = {1, 3}
SURVIVED = {0}
TIMEOUT = {36, -24, 24, 152, 255}
NO_TESTS = {5, 33}


@dataclass
class Outcome:
    module: str
    mutants: int = 0
    killed: int = 0
    survived: int = 0
    timeout: int = 0
    other: int = 0
    seconds: float = 0.0
    survivors: tuple[str, ...] = ()
    timeouts: tuple[str, ...] = ()
    error: str = ""

    @property
    def kill_rate(self) -> float:
        # A timeout is a kill for mutmut; it is counted apart because it usually hides a test
        # that can only fail by hanging.
        return 100.0 * (self.killed + self.timeout) / self.mutants if self.mutants else 0.0


def find_module(wanted: str) -> Module:
    for module in MODULES:
        if wanted in (module.name, module.path, module.path.removeprefix("app/")):
            return module
    names = ", ".join(module.name for module in MODULES)
    raise SystemExit(f"unknown module {wanted!r}; one of: {names} (or its path)")


def prepare(module: Module) -> Path:
    workdir = MUTANTS_DIR / module.name
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    for name in LINKED:
        (workdir / name).symlink_to(REPO_ROOT / name)
    return workdir


def tally(module: Module, workdir: Path, seconds: float) -> Outcome:
    outcome = Outcome(module.name, seconds=seconds)
    meta = workdir / "mutants" / f"{module.path}.meta"
    if not meta.is_file():
        outcome.error = "mutmut produced no results"
        return outcome
    codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
    outcome.mutants = len(codes)
    outcome.killed = sum(code in KILLED for code in codes.values())
    outcome.survived = sum(code in SURVIVED for code in codes.values())
    outcome.timeout = sum(code in TIMEOUT for code in codes.values())
    outcome.other = outcome.mutants - outcome.killed - outcome.survived - outcome.timeout
    # "no tests" is a survivor too: no test even calls the function.
    outcome.survivors = tuple(
        sorted(name for name, code in codes.items() if code in SURVIVED | NO_TESTS)
    )
    outcome.timeouts = tuple(sorted(name for name, code in codes.items() if code in TIMEOUT))
    return outcome


def run_module(module: Module, verbose: bool, children: int = 1) -> Outcome:
    print(f"=== {module.name}: {module.path} against {' '.join(module.tests)}", flush=True)
    workdir = prepare(module)
    started = time.monotonic()
    child = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            module.name,
            "--children",
            str(children),
        ],
        cwd=workdir,
        stdout=None if verbose else subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    outcome = tally(module, workdir, time.monotonic() - started)
    if child.returncode != 0:
        outcome.error = outcome.error or f"mutmut exited with {child.returncode}"
        if child.stdout:
            print(child.stdout[-4000:])
    diffs = workdir / DIFFS
    if diffs.is_file():
        print(diffs.read_text())
    return outcome


def teach_mutmut_our_package_name() -> None:
    """mutmut takes a top-level `src` for a src-layout folder and drops it from module names,
    while our package is really called `src` (imported from `app/`): the names it derives from
    the paths must be the names Python gives the modules, or no mutant is ever switched on.
    These are mutmut 3.8's internals (uv.lock pins it)."""
    import mutmut.__main__ as mutmut_main
    from mutmut.configuration import config
    from mutmut.mutation import file_mutation, trampoline
    from mutmut.state import state
    from mutmut.utils import format_utils

    def mutant_name(relative_source_path: Path, mutant_method_name: str) -> str:
        module = str(relative_source_path.with_suffix("")).replace(os.sep, ".")
        module = module.removeprefix("app.")
        return f"{module}.{mutant_method_name}".replace(".__init__.", ".")

    def record_hit(name: str, caller: str | None = None) -> None:
        state()._stats.add(name)
        if caller is not None and config().track_dependencies:
            state().function_dependencies[name].add(caller)

    def set_mutant(name: str | None) -> None:
        # Processes the tests start (the benchmark runner) cannot report which functions they
        # ran, so while mutmut maps tests to functions they run the original code.
        set_mutant_under_test(name)
        if name == "stats":
            os.environ.pop("MUTANT_UNDER_TEST", None)

    set_mutant_under_test = trampoline.set_mutant_under_test
    for holder in (format_utils, file_mutation, mutmut_main):
        holder.get_mutant_name = mutant_name  # type: ignore[attr-defined]
    trampoline.record_trampoline_hit = record_hit  # type: ignore[attr-defined]
    mutmut_main.set_mutant_under_test = set_mutant  # type: ignore[attr-defined]


def child(name: str, children: int) -> None:
    """Runs mutmut for one module in this process; the cwd is the module's folder."""
    from mutmut import configuration
    from mutmut.__main__ import _run

    teach_mutmut_our_package_name()
    module = find_module(name)
    base = configuration.config()
    configuration._config = dataclasses.replace(
        base,
        only_mutate=[module.path],
        pytest_add_cli_args_test_selection=list(module.tests),
    )
    _run((), max_children=children)
    write_diffs(module)


def write_diffs(module: Module) -> None:
    """Every mutant that was not killed by a failing test, with its diff, for the lead to read."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    codes = json.loads(Path(f"mutants/{module.path}.meta").read_text())["exit_code_by_key"]
    lines = []
    for name, code in sorted(codes.items()):
        if code not in KILLED:
            lines.append(f"# {name}: exit code {code}")
            lines.append(get_diff_for_mutant(name, path=module.path))
            lines.append("")
    Path(DIFFS).write_text("\n".join(lines))


def table(outcomes: list[Outcome]) -> str:
    header = f"{'module':<18} {'mutants':>7} {'killed':>6} {'survived':>8} {'timeout':>7} "
    header += f"{'kill rate':>9} {'wall time':>9}"
    lines = [header, "-" * len(header)]
    for o in outcomes:
        rate = f"{o.kill_rate:.1f}%" if o.mutants else "-"
        line = f"{o.module:<18} {o.mutants:>7} {o.killed:>6} {o.survived + o.other:>8} "
        line += f"{o.timeout:>7} {rate:>9} {o.seconds:>8.0f}s"
        lines.append(line + (f"  ({o.error})" if o.error else ""))
    return "\n".join(lines)


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("modules", nargs="*", help="module names or paths (default: all)")
    parser.add_argument("--list", action="store_true", help="list the modules and their tests")
    parser.add_argument("--verbose", action="store_true", help="show mutmut's own output")
    parser.add_argument(
        "--children",
        type=positive,
        default=1,
        metavar="N",
        help="mutants run at a time, each in its own process (default: 1)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.children)
        return 0
    if args.list:
        for module in MODULES:
            print(f"{module.name:<18} {module.path:<50} {' '.join(module.tests)}")
        return 0
    chosen = [find_module(name) for name in args.modules] if args.modules else list(MODULES)
    os.environ.pop("MUTANT_UNDER_TEST", None)
    outcomes: list[Outcome] = []
    for module in chosen:
        outcomes.append(run_module(module, args.verbose, args.children))
        # Kept after each module: a long run stopped halfway keeps what it measured.
        save(outcomes[-1])
        print(table(outcomes[-1:]), flush=True)
    print()
    print(table(outcomes))
    return 1 if any(o.error for o in outcomes) else 0


def save(outcome: Outcome) -> None:
    summary = MUTANTS_DIR / "summary.json"
    kept = json.loads(summary.read_text()) if summary.is_file() else {}
    kept[outcome.module] = dataclasses.asdict(outcome)
    summary.write_text(json.dumps(kept, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
