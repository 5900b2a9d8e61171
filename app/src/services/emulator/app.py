"""The emulator's ASGI callable: routing, authentication, faults and plain answers."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import urllib.parse
from dataclasses import dataclass
from typing import Final

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from src.services.emulator.asgi import (
    ClientGoneError,
    HttpError,
    lifespan,
    read_body,
    send_bytes,
    sleep_unless_disconnected,
)
from src.services.emulator.catalog import (
    MODELS,
    MODELS_BY_ID,
    EmulatedModel,
    EmulatedProvider,
    models_body,
)
from src.services.emulator.config import EmulatorConfig
from src.services.emulator.generations import (
    NOT_FOUND_MESSAGE as GENERATION_NOT_FOUND,
)
from src.services.emulator.generations import (
    GenerationRecord,
    GenerationStore,
)
from src.services.emulator.providers import (
    NO_PROVIDER_MESSAGE,
    NO_PROVIDER_STATUS,
    PROVIDER_FAILED_MESSAGE,
    PROVIDER_FAILED_RAW,
    PROVIDER_FAILED_STATUS,
    Capacity,
    NoProviderError,
    ProviderFailedError,
    Router,
    endpoints_body,
    provider_speed,
    serving_provider,
)
from src.services.emulator.request import BadRequestError, ChatRequest, parse_chat_request
from src.services.emulator.scenarios import (
    NO_SCENARIO,
    Scenario,
    ScenarioError,
    parse_scenario,
    scenario_for,
)
from src.services.emulator.streaming import (
    MID_STREAM_ERROR_CODE,
    MID_STREAM_ERROR_MESSAGE,
    StreamPlan,
    stream_answer,
)
from src.services.emulator.text import answer_tokens, count_prompt_tokens
from src.services.emulator.wire import (
    JSON_CONTENT_TYPE,
    AnswerHead,
    ChunkFramer,
    Headers,
    completion_body,
    completion_error_body,
    error_body,
    usage,
)

API_PREFIX: Final = "/api/v1"
SCENARIO_HEADER: Final = b"x-emulator-scenario"
MAX_BODY_BYTES: Final = 16 * 1024 * 1024
# Long enough that any client timeout fires first; the sleep ends early if the client leaves.
TIMEOUT_SCENARIO_SECONDS: Final = 3600.0

_JSON_HEADERS: Final[Headers] = [JSON_CONTENT_TYPE]
_FAULT_MESSAGES: Final[dict[int, str]] = {
    401: "No auth credentials found",
    402: "Insufficient credits (emulated): this account never has any",
    403: "Forbidden (emulated)",
    408: "Request timed out (emulated)",
    429: "Rate limit exceeded (emulated): wait for Retry-After seconds",
    500: "Internal server error (emulated)",
    502: "Provider returned error (emulated)",
    503: "No provider available (emulated)",
    504: "Provider timed out (emulated)",
}
_RANDOM_SERVER_ERRORS: Final = (502, 503)
_MODELS_FAULT_KEY: Final = "\x00GET /models"


@dataclass(slots=True)
class _Answer:
    """One chat answer, planned before it is sent and recorded once it has been."""

    head: AnswerHead
    prompt_tokens: int
    cost: float
    streamed: bool
    plan: StreamPlan


class EmulatorApp:
    """One emulated OpenRouter. It owns its fault RNG and its per-prompt rate-limit counters."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self._rng = random.Random(config.seed)
        self._rate_limit_hits: dict[str, int] = {}
        self._models_body = models_body()
        self._health_body = orjson.dumps(
            {"status": "ok", "service": "openrouter-emulator", "models": len(MODELS)}
        )
        self._generation_ids = itertools.count(1)
        self._generation_prefix = f"gen-emu-{int(time.time())}-"
        self._router = Router(MODELS)
        self._speeds = {
            (model.id, provider.name): provider_speed(config, model, provider)
            for model in MODELS
            for provider in model.providers
        }
        self._capacity = Capacity(config.capacity)
        self._generations = GenerationStore(config.generation_delay_seconds)
        self._endpoints_bodies = {model.id: endpoints_body(model, config) for model in MODELS}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                await self._route(scope, receive, send)
            except HttpError as exc:
                await send_bytes(
                    send,
                    exc.status,
                    error_body(exc.status, exc.message, exc.metadata),
                    [*_JSON_HEADERS, *exc.headers],
                )
            except ClientGoneError:
                return
        elif scope["type"] == "lifespan":
            await lifespan(receive, send)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if path.startswith(API_PREFIX):
            path = path[len(API_PREFIX) :]
        path = path.rstrip("/") or "/"
        method: str = scope["method"]
        if path == "/chat/completions":
            _allow(method, "POST", path)
            await self._chat(scope, receive, send)
        elif path == "/models":
            _allow(method, "GET", path)
            await self._models(scope, receive, send)
        elif path == "/generation":
            _allow(method, "GET", path)
            await self._generation(scope, send)
        elif path.startswith("/models/") and path.endswith("/endpoints"):
            _allow(method, "GET", path)
            await self._endpoints(path[len("/models/") : -len("/endpoints")], send)
        elif path in ("/", "/health"):
            _allow(method, "GET", path)
            await send_bytes(send, 200, self._health_body, _JSON_HEADERS)
        else:
            raise HttpError(404, f"Not found: {scope['path']}")

    async def _models(self, scope: Scope, receive: Receive, send: Send) -> None:
        header = _header(scope, SCENARIO_HEADER)
        if header is None:
            await send_bytes(send, 200, self._models_body, _JSON_HEADERS)
            return
        scenario = _parse(header)
        status = self._forced_status(scenario, _MODELS_FAULT_KEY)
        if await self._failed_or_hung(receive, send, status, scenario, None):
            return
        if scenario.ttft_seconds:
            await asyncio.sleep(scenario.ttft_seconds)
        await _send_json_answer(send, self._models_body, scenario)

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        arrived = asyncio.get_running_loop().time()
        authorization = _header(scope, b"authorization")
        if not _has_bearer_token(authorization):
            raise HttpError(401, _FAULT_MESSAGES[401])
        try:
            request = parse_chat_request(await read_body(receive, MAX_BODY_BYTES))
        except BadRequestError as exc:
            raise HttpError(400, str(exc)) from None
        model = MODELS_BY_ID.get(request.model)
        if model is None:
            raise HttpError(400, f"{request.model} is not a valid model ID")
        header = _header(scope, SCENARIO_HEADER)
        try:
            scenario = scenario_for(
                header.decode("latin-1") if header is not None else None,
                request.last_user_text,
            )
        except ScenarioError as exc:
            raise HttpError(400, str(exc)) from None
        provider = self._provider(model, request, scenario)

        if scenario is NO_SCENARIO:
            # Random faults only hit requests that force nothing, so a forced scenario stays exact.
            status = self._random_fault()
            stream_error = request.stream and self._roll(self.config.stream_error_probability)
        else:
            status = self._forced_status(scenario, request.prompt)
            stream_error = scenario.mid_stream_error
        if await self._failed_or_hung(receive, send, status, scenario, provider.name):
            return

        answer = self._answer(model, provider, request, scenario, stream_error)
        async with self._capacity.slot(model.id, provider.name):
            started = asyncio.get_running_loop().time()
            if request.stream:
                await stream_answer(send, ChunkFramer(answer.head), answer.plan)
            elif not await self._send_plain(receive, send, answer, scenario):
                return
        self._record(answer, arrived, started)

    def _provider(
        self, model: EmulatedModel, request: ChatRequest, scenario: Scenario
    ) -> EmulatedProvider:
        try:
            route = self._router.route(model, request.provider)
            failing = self.config.failing_providers
            if scenario.failing_providers:
                failing = failing | scenario.failing_providers
            return serving_provider(route, failing)
        except NoProviderError:
            raise HttpError(NO_PROVIDER_STATUS, NO_PROVIDER_MESSAGE) from None
        except ProviderFailedError as exc:
            raise HttpError(
                PROVIDER_FAILED_STATUS,
                PROVIDER_FAILED_MESSAGE,
                metadata={"provider_name": exc.provider.name, "raw": PROVIDER_FAILED_RAW},
            ) from None

    def _answer(
        self,
        model: EmulatedModel,
        provider: EmulatedProvider,
        request: ChatRequest,
        scenario: Scenario,
        stream_error: bool,
    ) -> _Answer:
        tokens = answer_tokens(model.id, request.prompt)
        finish_reason = "stop"
        if request.max_tokens is not None and request.max_tokens < len(tokens):
            tokens = tokens[: request.max_tokens]
            finish_reason = "length"
        prompt_tokens = count_prompt_tokens(request.prompt)
        speed = self._speeds[model.id, provider.name]
        cost = provider.cost(prompt_tokens, len(tokens))
        plan = StreamPlan(
            tokens=tokens,
            finish_reason=finish_reason,
            usage=usage(prompt_tokens, len(tokens), cost),
            ttft_seconds=(
                speed.ttft_seconds if scenario.ttft_seconds is None else scenario.ttft_seconds
            ),
            tokens_per_second=(
                speed.tokens_per_second
                if scenario.tokens_per_second is None
                else scenario.tokens_per_second
            ),
            mid_stream_error=stream_error,
            invalid_json=scenario.invalid_json,
            truncated=scenario.truncated,
        )
        head = AnswerHead(
            generation_id=f"{self._generation_prefix}{next(self._generation_ids)}",
            provider=provider.name,
            model_id=model.id,
            created=int(time.time()),
        )
        return _Answer(
            head=head,
            prompt_tokens=prompt_tokens,
            cost=cost,
            streamed=request.stream,
            plan=plan,
        )

    async def _send_plain(
        self, receive: Receive, send: Send, answer: _Answer, scenario: Scenario
    ) -> bool:
        """Send a plain answer when its last token would be; False if the caller left first."""
        plan = answer.plan
        tps = plan.tokens_per_second
        delay = plan.ttft_seconds + ((len(plan.tokens) - 1) / tps if tps else 0.0)
        # A caller that gave up gets nothing: like a real provider, stop "generating" for it.
        if delay > 0 and not await sleep_unless_disconnected(receive, delay):
            return False
        if plan.mid_stream_error:
            body = completion_error_body(
                answer.head,
                code=MID_STREAM_ERROR_CODE,
                message=MID_STREAM_ERROR_MESSAGE,
            )
        else:
            body = completion_body(
                answer.head,
                content="".join(plan.tokens),
                finish_reason=plan.finish_reason,
                usage=plan.usage,
            )
        await _send_json_answer(send, body, scenario)
        return True

    def _record(self, answer: _Answer, arrived: float, started: float) -> None:
        ended = asyncio.get_running_loop().time()
        plan = answer.plan
        first_token = started + plan.ttft_seconds
        self._generations.add(
            GenerationRecord(
                id=answer.head.generation_id,
                model=answer.head.model_id,
                provider_name=answer.head.provider,
                created=answer.head.created,
                streamed=answer.streamed,
                latency=first_token - arrived,
                generation_time=ended - first_token,
                prompt_tokens=answer.prompt_tokens,
                completion_tokens=len(plan.tokens),
                total_cost=answer.cost,
                finish_reason="error" if plan.mid_stream_error else plan.finish_reason,
            ),
            ended,
        )

    async def _generation(self, scope: Scope, send: Send) -> None:
        if not _has_bearer_token(_header(scope, b"authorization")):
            raise HttpError(401, _FAULT_MESSAGES[401])
        query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
        ids = query.get("id")
        if not ids or not ids[0]:
            raise HttpError(400, "Query parameter 'id' is required")
        record = self._generations.get(ids[0], asyncio.get_running_loop().time())
        if record is None:
            raise HttpError(404, GENERATION_NOT_FOUND)
        await send_bytes(send, 200, record.to_json(), _JSON_HEADERS)

    async def _endpoints(self, model_id: str, send: Send) -> None:
        body = self._endpoints_bodies.get(model_id)
        if body is None:
            raise HttpError(404, f"Model {model_id} not found")
        await send_bytes(send, 200, body, _JSON_HEADERS)

    def _roll(self, probability: float) -> bool:
        # No draw at probability 0, so enabling one fault does not reshuffle the others.
        return probability > 0 and self._rng.random() < probability

    def _random_fault(self) -> int | None:
        if self._roll(self.config.rate_limit_probability):
            return 429
        if self._roll(self.config.server_error_probability):
            return self._rng.choice(_RANDOM_SERVER_ERRORS)
        return None

    def _forced_status(self, scenario: Scenario, key: str) -> int | None:
        if scenario.rate_limit_times:
            hits = self._rate_limit_hits.get(key, 0)
            if hits < scenario.rate_limit_times:
                self._rate_limit_hits[key] = hits + 1
                return 429
        return scenario.status

    async def _failed_or_hung(
        self,
        receive: Receive,
        send: Send,
        status: int | None,
        scenario: Scenario,
        provider_name: str | None,
    ) -> bool:
        """Answer a fault, or hold a `timeout` scenario until the client leaves: True if done."""
        if status is not None:
            await self._send_fault(send, status, scenario, provider_name)
            return True
        return scenario.timeout and not await sleep_unless_disconnected(
            receive, TIMEOUT_SCENARIO_SECONDS
        )

    async def _send_fault(
        self, send: Send, status: int, scenario: Scenario, provider_name: str | None
    ) -> None:
        headers = list(_JSON_HEADERS)
        retry_after = scenario.retry_after_seconds
        if status == 429 or (status == 503 and retry_after is not None):
            seconds = self.config.retry_after_seconds if retry_after is None else retry_after
            headers.append((b"retry-after", _format_seconds(seconds)))
        metadata: dict[str, object] | None = (
            {"provider_name": provider_name}
            if provider_name is not None and (status == 429 or status >= 500)
            else None
        )
        message = _FAULT_MESSAGES.get(status, f"Emulated error {status}")
        await send_bytes(send, status, error_body(status, message, metadata), headers)


def create_emulator_app(config: EmulatorConfig) -> ASGIApp:
    return EmulatorApp(config)


def _allow(method: str, allowed: str, path: str) -> None:
    if method != allowed:
        raise HttpError(
            405, f"Method {method} not allowed on {path}", [(b"allow", allowed.encode())]
        )


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


def _has_bearer_token(value: bytes | None) -> bool:
    return value is not None and value[:7].lower() == b"bearer " and bool(value[7:].strip())


def _parse(header: bytes) -> Scenario:
    try:
        return parse_scenario(header.decode("latin-1"))
    except ScenarioError as exc:
        raise HttpError(400, str(exc)) from None


def _format_seconds(seconds: float) -> bytes:
    # Whole seconds as the RFC's delta-seconds; fractions kept so tests can retry fast.
    return str(int(seconds) if seconds == int(seconds) else seconds).encode()


async def _send_json_answer(send: Send, body: bytes, scenario: Scenario) -> None:
    if scenario.invalid_json:
        await send_bytes(send, 200, body[: len(body) // 2], _JSON_HEADERS)
    elif scenario.truncated:
        # Promise the whole body, send half, return: the server then drops the connection.
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*_JSON_HEADERS, (b"content-length", b"%d" % len(body))],
            }
        )
        await send(
            {"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True}
        )
    else:
        await send_bytes(send, 200, body, _JSON_HEADERS)
