"""An offline OpenRouter: a pure ASGI app answering the API calls this service makes.

Routes, each served under `/api/v1` and bare:

- `GET /models`: `{"data": [...]}` with full OpenRouter model objects (pricing as decimal
  strings). Ids: `emulator/small`, `emulator/medium`, `emulator/large`, `emulator/tiny:free`.
  Needs no key, as on OpenRouter.
- `POST /chat/completions`: needs `Authorization: Bearer <anything>`. Plain answers are a
  `chat.completion`; with `"stream": true` an SSE stream of `chat.completion.chunk` events,
  `: OPENROUTER PROCESSING` comments (one before the first event, one amid the tokens, one a
  second while the first token is pending), a finish chunk, a usage chunk with empty
  `choices`, then `data: [DONE]`.
- `GET /models/{author}/{slug}/endpoints`: `{"data": {id, name, ..., "endpoints": [...]}}`,
  one endpoint per provider (pricing, context length, quantization, status, and the
  configured latency and throughput as last-30-minutes figures). Needs no key.
- `GET /generation?id=<gen-...>`: `{"data": {...}}`, OpenRouter's record of a finished
  generation (provider_name, latency and generation_time in ms, native token counts,
  total_cost, ...); a 404 until `generation_delay_seconds` after the answer ended, and for
  an unknown id. The newest 100,000 records are kept.
- `GET /health` and `GET /`: a small status object.

Providers: every model is served by two or three providers (`Alpha`, `Beta`, `Gamma`; see
`catalog`). Alpha serves at the model's listed price and speed; the others have their own
prices, quantization, context length and speed factors (TTFT times `ttft_factor`, tokens
per second times `throughput_factor`, on top of the model's `latency_factor`). Answers and
every stream chunk carry `"provider": <name>` and the generation id. The request's
`provider` object is honoured as OpenRouter documents it (`only`, `order`, `ignore`,
`allow_fallbacks`, `sort`: `price`, `throughput`, `latency`; names match in any case);
without preferences requests rotate over the model's providers. Nothing left to route to is
OpenRouter's 404 "No allowed providers are available for the selected model.". A failing
provider (`failing_providers`, or the `fail_provider=<name>` scenario) is skipped for the
next one when fallbacks are allowed; when none is left the answer is a 502 "Provider
returned error" naming it in `metadata.provider_name`. `capacity` limits the requests in
flight per provider of a model; later ones wait in arrival order before their first token.

Errors use OpenRouter's body `{"error": {"code": <int>, "message": str, "metadata"?: {...}}}`:
401 without a bearer token, 400 for a malformed body or an unknown model id (the message
names it), 404 for an unknown path, 405 for a wrong method, 413 past 16 MiB of body.

Answers are deterministic: the same (model, messages) always gives the same 20 to 80 tokens
(see `text`), whichever provider serves; `max_tokens` or `max_completion_tokens` (the
smaller, when both are sent) cuts them with `finish_reason: "length"`. Usage is honest:
completion tokens are the tokens sent, prompt tokens the words of the prompt, cost at the
serving provider's price.

Latency: the first token comes the provider's TTFT after the request (plus any queueing),
then one token every `1 / tokens_per_second` of the provider (0: all at once). A plain answer
is sent when its last token would be.

Global faults (`EmulatorConfig`): probabilities of a 429 (with `Retry-After`), of a 502/503,
and of a mid-stream error, drawn from the app's seeded RNG; they hit only chat requests that
carry no scenario, so a forced scenario is never disturbed by chance.

Per-request scenarios come from the `X-Emulator-Scenario` header or from `[[emulator:<spec>]]`
anywhere in the last user message (the proxy does not forward headers, the prompt it does).
A spec is a comma-separated list; the answer is still generated from the full prompt.

- `rate_limit`: 429 with `Retry-After` (the config's `retry_after_seconds`).
- `rate_limit_once`, `rate_limit_times=<n>`: the first n requests with this exact prompt get
  a 429, later ones succeed (a counter per prompt, kept by the app instance).
- `retry_after=<seconds>`: the `Retry-After` sent with a 429 (and with a forced 503).
- `unauthorized` 401, `payment_required` 402, `forbidden` 403, `request_timeout` 408,
  `server_error` 500, `bad_gateway` 502, `unavailable` 503, `gateway_timeout` 504, and
  `status=<400..599>` for any other code.
- `timeout`: wait an hour before answering; the wait ends early when the client goes away.
- `invalid_json`: 200 whose JSON body is cut in half; in a stream, a `data:` event whose JSON
  is cut, then `[DONE]`.
- `truncated`: 200 promising a `content-length` it never delivers, then the connection drops;
  in a stream, half the tokens, then the connection drops without the final chunk.
- `mid_stream_error`: in a stream, up to 3 tokens, then a chunk with `"error": {"code": 502,
  ...}` and `finish_reason: "error"`, then `[DONE]`; a plain request gets a 200 whose body
  carries that error object and no choices, as OpenRouter does when a provider fails late.
- `ttft=<seconds>` (alias `delay=<seconds>`), `tps=<tokens per second>`: latency of this
  request, whatever its provider.
- `fail_provider=<name>`: that provider fails this request (repeat it for several).

`GET /models` honours the header (not the random faults) for status, timeout, `ttft`,
`invalid_json` and `truncated`. An unknown scenario or a bad value is a 400.
"""

from src.services.emulator.app import EmulatorApp, create_emulator_app
from src.services.emulator.catalog import MODELS, MODELS_BY_ID
from src.services.emulator.config import EmulatorConfig
from src.services.emulator.server import serve_embedded_emulator

__all__ = [
    "MODELS",
    "MODELS_BY_ID",
    "EmulatorApp",
    "EmulatorConfig",
    "create_emulator_app",
    "serve_embedded_emulator",
]
