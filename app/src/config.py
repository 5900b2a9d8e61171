"""Every tunable of the service, read from the environment and `.env` at the repo root."""

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from src.services.base.proxies import environment_proxy_secrets

REPO_ROOT = Path(__file__).resolve().parents[2]

MIB = 1024 * 1024

TransportKind = Literal["wire", "httpx"]
# BENCHMARKS_KEEP_DAYS when it is unset and JOBS_BACKEND=redis.
REDIS_KEEP_DAYS = 30.0

# Where prometheus-client's multiprocess mode keeps each process's values; read when it is
# first imported, so serve.py sets it before any worker imports the app.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


# The bounded-number settings; Field() returns Any so that each fits its annotation.
def _at_least(minimum: int, *, default: float | None) -> Any:
    return Field(default=default, ge=minimum)


def _between(minimum: int, maximum: int, *, default: float) -> Any:
    return Field(default=default, ge=minimum, le=maximum)


def _positive(*, default: float | None, most: float | None = None) -> Any:
    """Above zero: a duration of 0 would mean "never wait" or "no time at all"."""
    return Field(default=default, gt=0, le=most)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=REPO_ROOT / ".env",
        env_file_encoding="utf-8",
        extra="ignore",
        # `NAME=` (as example.env writes an optional setting) means "not set".
        env_ignore_empty=True,
        # A refused value may be a secret (a key, a URL with a password): name it, never echo it.
        hide_input_in_errors=True,
    )

    openrouter_api_key: SecretStr = SecretStr("")
    openrouter_base_url: str = "https://openrouter.ai/api/v1"

    # Loopback only: other machines cannot reach a laptop's service (the image sets 0.0.0.0).
    host: str = "127.0.0.1"
    port: int = _between(1, 65535, default=8000)
    workers: int = _between(1, 64, default=1)
    shutdown_timeout_seconds: float = _positive(default=10.0)
    # Limits on what a connection may cost before its request reaches the app
    # (api/gate/http_limits.py).
    max_connections: int = _at_least(1, default=1000)
    max_header_bytes: int = _at_least(1024, default=64 * 1024)
    header_timeout_seconds: float = _positive(default=10.0)
    body_timeout_seconds: float = _positive(default=30.0)

    log_dir: Path = Path("logs")
    log_level: str = "INFO"
    log_max_bytes: int = _at_least(1024, default=10 * MIB)
    log_backup_count: int = _at_least(0, default=5)
    benchmarks_dir: Path = Path("benchmarks")

    models_cache_ttl_seconds: float = _at_least(0, default=600.0)

    retry_attempts: int = _between(1, 20, default=5)
    retry_multiplier: float = _at_least(0, default=1.0)
    retry_min_seconds: float = _at_least(0, default=1.0)
    retry_max_seconds: float = _at_least(0, default=30.0)

    upstream_timeout_seconds: float = _positive(default=120.0)
    upstream_connect_timeout_seconds: float = _positive(default=10.0)
    # The most one upstream answer may take, from sending to its last byte, however steadily
    # it trickles: the read timeout above is only the longest silence within it.
    upstream_deadline_seconds: float = _positive(default=600.0)
    upstream_max_connections: int = _at_least(1, default=1000)
    # "wire": our HTTP/1.1 transport, its clock at the socket; "httpx": httpx's own, for
    # what ours does not speak (HTTP/2, SOCKS proxies, client certificates).
    upstream_transport: TransportKind = "wire"
    # Only under UPSTREAM_TRANSPORT=httpx: the wire transport speaks HTTP/1.1 alone.
    upstream_http2: bool = False
    upstream_client_cert: Path | None = None
    upstream_client_key: Path | None = None
    # A plain answer is read whole, so its size is capped; a stream is read line by line, so
    # each of its lines is: a long stream is never held whole.
    max_upstream_response_bytes: int = _at_least(1024, default=32 * MIB)
    max_upstream_line_bytes: int = _at_least(1024, default=4 * MIB)

    # A JSON body: a prompt of up to 1,000,000 characters, JSON-escaped, and a few fields.
    max_json_body_bytes: int = _at_least(1024, default=8 * MIB)
    max_upload_bytes: int = _at_least(1, default=MIB)
    max_prompts: int = _at_least(1, default=1000)
    max_runs: int = _at_least(1, default=100)
    max_concurrency: int = _at_least(1, default=100)
    max_benchmark_requests: int = _at_least(1, default=10000)
    # Caps on total work, across every worker sharing BENCHMARKS_DIR: past them, 429.
    max_running_benchmarks: int = _at_least(1, default=4)
    max_inflight_total: int = _at_least(1, default=200)
    # What a run may last, warm-up included: a schedule past it is refused, a run reaching it
    # is stopped, so a run that would never end cannot hold a running slot forever.
    max_run_seconds: float = _positive(default=86400.0)
    # No model answers this many tokens; a larger max_tokens is a mistake or an attack.
    max_tokens_limit: int = _between(1, 1_000_000, default=65536)
    # Choices one /v1 request may ask for (`n`): each is a whole answer, paid for.
    max_choices: int = _between(1, 128, default=1)
    # Finished runs older than this many days are deleted; unset keeps every run.
    benchmarks_keep_days: float | None = _positive(default=None)
    # "process": each benchmark runs in its own runner process, so the API's traffic cannot
    # move its clock; "inline": in the API's event loop (tests, or where subprocesses are
    # not allowed).
    benchmark_isolation: Literal["process", "inline"] = "process"
    # With "process": runner processes that share one run's open-loop schedule (each sends
    # every k-th scheduled request), for rates past what one event loop sends on time; at most
    # the run's concurrency. As many are kept started ahead of the next run.
    runner_processes: int = Field(default=1, ge=1, le=64)
    # A run whose row or state writes keep failing this long (a full or lost BENCHMARKS_DIR)
    # stops sending and ends failed; until then it waits, sending nothing new. Below the 30 s
    # after which a run whose state record stopped moving is listed as interrupted.
    benchmark_write_retry_seconds: float = _positive(default=10.0, most=20)
    # Where runs are kept and run: "files" (BENCHMARKS_DIR, runners are children of the API
    # process) or "redis" (REDIS_URL: runs are queued jobs that `python -m src.runner`
    # processes take, on any machine; API replicas share nothing else).
    jobs_backend: Literal["files", "redis"] = "files"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Runs one runner process hosts at once (JOBS_BACKEND=redis).
    runner_concurrency: int = _between(1, 64, default=4)
    # A runner that has not shown it is alive for this long is dead: its runs end failed.
    runner_heartbeat_timeout_seconds: float = _between(1, 60, default=5.0)

    # GET /metrics for Prometheus, and the counting behind it on every request.
    metrics_enabled: bool = True
    # /metrics without an inbound key, for a scraper on a private network.
    metrics_public: bool = False

    # Inbound authentication: empty means the proxy is open (the default for a laptop).
    proxy_api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # Keys that also see and cancel every benchmark run, whoever started it.
    proxy_admin_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # Sites whose pages may call the service from a browser (CORS); empty: none but its own.
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Host headers the service answers to ("*": any); the default stops DNS rebinding.
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["localhost", "127.0.0.1", "[::1]"]
    )

    # After a run (and for /generate on request), fetch OpenRouter's own record of every
    # generation; a record not there after GENERATION_STATS_WAIT_SECONDS is marked missing.
    generation_stats: bool = False
    generation_stats_wait_seconds: float = _between(0, 600, default=30.0)

    emulator_host: str = "127.0.0.1"
    emulator_port: int = _between(1, 65535, default=8001)
    emulator_ttft_seconds: float = _at_least(0, default=0.3)
    emulator_tokens_per_second: float = _at_least(0, default=40.0)
    emulator_rate_limit_probability: float = _between(0, 1, default=0.0)
    emulator_server_error_probability: float = _between(0, 1, default=0.0)
    emulator_stream_error_probability: float = _between(0, 1, default=0.0)
    emulator_retry_after_seconds: float = _at_least(0, default=1.0)
    emulator_seed: int = 0
    # Emulated providers that fail every request (comma-separated names, e.g. "Beta").
    emulator_failing_providers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    emulator_generation_delay_seconds: float = _at_least(0, default=1.0)
    # Requests in flight per emulated provider of a model; empty: unlimited.
    emulator_capacity: int | None = _at_least(1, default=None)

    @field_validator("log_dir", "benchmarks_dir")
    @classmethod
    def _resolve_against_repo_root(cls, value: Path) -> Path:
        # The service may be started from any directory (make, Docker, an IDE).
        return value if value.is_absolute() else (REPO_ROOT / value).resolve()

    @field_validator("openrouter_api_key")
    @classmethod
    def _key_fits_in_a_header(cls, value: SecretStr) -> SecretStr:
        # It is sent as `Authorization: Bearer <key>`: a line break would end that header and
        # start another, and a space or control character is no part of any key.
        key = value.get_secret_value()
        if any(char.isspace() or not char.isprintable() for char in key):
            raise ValueError(
                "OPENROUTER_API_KEY must be one word of printable characters: it contains "
                "whitespace or a control character (a line break, a tab, NUL...)"
            )
        return value

    @field_validator("upstream_client_cert", "upstream_client_key")
    @classmethod
    def _certificate_file_exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        # Said at startup, by name, rather than as a traceback from the TLS library.
        if value is None:
            return None
        path = value if value.is_absolute() else (REPO_ROOT / value).resolve()
        if not path.is_file():
            raise ValueError(f"{str(info.field_name).upper()} is not a file: {path}")
        return path

    @model_validator(mode="after")
    def _client_certificate_needs_httpx(self) -> Self:
        # Said at startup: the wire transport would otherwise connect without them.
        wants_httpx = self.upstream_http2 or self.upstream_client_cert or self.upstream_client_key
        if wants_httpx and self.upstream_transport != "httpx":
            raise ValueError(
                "UPSTREAM_HTTP2, UPSTREAM_CLIENT_CERT and UPSTREAM_CLIENT_KEY need "
                "UPSTREAM_TRANSPORT=httpx"
            )
        if self.upstream_client_key and not self.upstream_client_cert:
            raise ValueError("UPSTREAM_CLIENT_KEY needs UPSTREAM_CLIENT_CERT")
        return self

    @model_validator(mode="after")
    def _redis_keeps_runs_for_a_while(self) -> Self:
        # Redis holds every run in memory: without a retention it would only grow.
        if self.jobs_backend == "redis" and self.benchmarks_keep_days is None:
            self.benchmarks_keep_days = REDIS_KEEP_DAYS
        return self

    @field_validator("openrouter_base_url")
    @classmethod
    def _no_credentials_in_url(cls, value: str) -> str:
        # They would be shown wherever the upstream is named, and the upstream is already
        # authenticated by OPENROUTER_API_KEY.
        parts = urlsplit(value)
        if parts.username is not None or parts.password is not None:
            raise ValueError(
                "OPENROUTER_BASE_URL must not contain credentials (user:password@): remove "
                "them, and put the upstream's key in OPENROUTER_API_KEY"
            )
        return value

    @field_validator(
        "proxy_api_keys",
        "proxy_admin_keys",
        "cors_origins",
        "allowed_hosts",
        "emulator_failing_providers",
        mode="before",
    )
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @property
    def uses_emulator(self) -> bool:
        """Without a key the service answers from the built-in OpenRouter emulator."""
        return not self.openrouter_api_key.get_secret_value()

    @property
    def inbound_keys_on(self) -> bool:
        """Any inbound key set: every protected route needs one, and runs have owners."""
        return bool(self.proxy_api_keys or self.proxy_admin_keys)

    @property
    def upstream_label(self) -> str:
        if self.uses_emulator:
            return "emulator"
        # Host and port only: credentials in a URL's authority are not for display.
        return urlsplit(self.openrouter_base_url).netloc.rpartition("@")[2]

    def secrets(self) -> list[str]:
        """Values that must never reach logs, responses or files."""
        values = [self.openrouter_api_key.get_secret_value()]
        values += [key.get_secret_value() for key in self.proxy_api_keys]
        values += [key.get_secret_value() for key in self.proxy_admin_keys]
        values.append(urlsplit(self.redis_url).password or "")
        values += environment_proxy_secrets()
        return [value for value in values if value]


@lru_cache
def get_settings() -> Settings:
    return Settings()


def settings_or_exit() -> Settings:
    """The settings a command starts with: a refused value ends it with one message (which
    names the setting, never its value) instead of a traceback."""
    try:
        return get_settings()
    except ValidationError as exc:
        raise SystemExit(f"Invalid settings (environment or .env): {exc}") from None
