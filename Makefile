# Every target bootstraps uv and installs the locked environment itself,
# so a fresh clone needs nothing but `make run` or `make test`.
SHELL := /bin/bash
export UV_PYTHON_DOWNLOADS := never
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
RUN := $(UV) run --frozen
# Runs without installing anything more: `uv run` would otherwise add the dev group.
SERVE := $(UV) run --frozen --no-dev --no-sync

.DEFAULT_GOAL := help
.PHONY: help uv redis-server sync sync-runtime run runner emulator bench follow test lint typecheck format perf profile mutate clean browser

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-13s %s\n", $$1, $$2}'

uv: ## Install uv with pip when it is missing
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 \
		|| python3 -m pip install --quiet uv \
		|| python3 -m pip install --quiet --user --break-system-packages uv

# The tests of JOBS_BACKEND=redis start a real redis-server (Debian's package) on a free port.
# Where it cannot be installed (no apt-get), those tests are skipped and say why.
redis-server: ## Install Debian's redis-server when it is missing (apt-get; sudo when not root)
	@command -v redis-server >/dev/null 2>&1 || { \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq redis-server >/dev/null; } \
		|| echo "redis-server could not be installed: the tests that need it will be skipped"

sync: uv ## Install the locked dependencies, dev tools included, into .venv
	$(UV) sync --frozen

# What serving needs and nothing more, as the image installs it (--no-dev); --inexact keeps the
# dev tools a developer already has in .venv instead of uninstalling them.
sync-runtime: uv ## Install only the locked runtime dependencies into .venv
	$(UV) sync --frozen --no-dev --inexact

run: sync-runtime ## Serve the app on HOST:PORT (the embedded emulator when OPENROUTER_API_KEY is empty)
	PYTHONPATH=app $(SERVE) python -m src.serve

runner: sync-runtime ## A benchmark runner for JOBS_BACKEND=redis (as many as wanted, on any machine)
	PYTHONPATH=app $(SERVE) python -m src.runner

emulator: sync-runtime ## Serve the OpenRouter emulator alone on EMULATOR_HOST:EMULATOR_PORT
	PYTHONPATH=app $(SERVE) python -m src.services.emulator

# make bench FILE=prompts/en.txt MODELS=emulator/small,emulator/large RUNS=3 [CONCURRENCY=2]
# make bench PROMPT_TOKENS=256 OUTPUT_TOKENS=128 WARMUP=2 MODELS=emulator/small
# make bench DATASET=chats.jsonl TURNS=3 MODELS=emulator/small
#   [PROVIDERS=alpha,beta or all] [PROVIDER_SORT=price|throughput|latency] [MAX_TOKENS=64]
#   [RATE=2 ARRIVAL=poisson SEED=1] [SWEEP=concurrency SWEEP_VALUES=1,2,4] [LABEL=...]
#   [KEY=one of PROXY_API_KEYS] [URL=http://host:port] [JSON=1] [NO_STREAM=1]
# make follow ID=<run id> [KEY=...] [URL=...] [JSON=1]
# The key reaches the command line in its environment: make never prints it, `ps` never shows it.
bench follow: export GATEWAY_KEY := $(or $(KEY),$(GATEWAY_KEY))
CLI_COMMON = $(if $(URL),--url "$(URL)") $(if $(JSON),--json)
bench: sync-runtime ## Benchmark on the running service (FILE, DATASET or PROMPT_TOKENS; MODELS, RUNS, PROVIDERS, KEY...): progress bar, table, cost
	PYTHONPATH=app $(SERVE) python -m src.cli benchmark $(CLI_COMMON) --models "$(MODELS)" \
		$(if $(FILE),--file "$(FILE)") $(if $(DATASET),--dataset "$(DATASET)") \
		$(if $(PROMPT_TOKENS),--prompt-tokens $(PROMPT_TOKENS)) \
		$(if $(PROMPT_TOKENS_STDEV),--prompt-tokens-stdev $(PROMPT_TOKENS_STDEV)) \
		$(if $(PROMPTS),--prompts $(PROMPTS)) $(if $(SEED),--seed $(SEED)) \
		$(if $(OUTPUT_TOKENS),--output-tokens $(OUTPUT_TOKENS)) \
		$(if $(OUTPUT_TOKENS_STDEV),--output-tokens-stdev $(OUTPUT_TOKENS_STDEV)) \
		$(if $(MAX_TOKENS),--max-tokens $(MAX_TOKENS)) \
		$(if $(TURNS),--turns $(TURNS)) $(if $(WARMUP),--warmup $(WARMUP)) \
		$(if $(PROVIDERS),--providers "$(PROVIDERS)") $(if $(PROVIDER_SORT),--provider-sort $(PROVIDER_SORT)) \
		$(if $(RUNS),--runs $(RUNS)) $(if $(CONCURRENCY),--concurrency $(CONCURRENCY)) \
		$(if $(RATE),--rate $(RATE)) $(if $(ARRIVAL),--arrival $(ARRIVAL)) \
		$(if $(DURATION),--duration $(DURATION)) \
		$(if $(SWEEP),--sweep $(SWEEP)) $(if $(SWEEP_VALUES),--sweep-values $(SWEEP_VALUES)) \
		$(if $(TTFT_SLO),--ttft-slo $(TTFT_SLO)) $(if $(LATENCY_SLO),--latency-slo $(LATENCY_SLO)) \
		$(if $(TPOT_SLO),--tpot-slo $(TPOT_SLO)) \
		$(if $(LABEL),--label "$(LABEL)") $(if $(NO_STREAM),--no-stream)

follow: sync-runtime ## Follow a benchmark already started (ID=...) to its table, as bench does
	PYTHONPATH=app $(SERVE) python -m src.cli follow $(CLI_COMMON) "$(ID)"

lint: sync ## ruff check and ruff format --check
	$(RUN) ruff check .
	$(RUN) ruff format --check .

typecheck: sync ## mypy, strict
	$(RUN) mypy

format: sync ## Apply ruff's fixes and formatting
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

# The browser tests drive Debian's Chromium (Playwright's own browsers are never downloaded).
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

browser: ## Install Debian's Chromium for the browser tests when it is missing
	@test -x "$(CHROMIUM)" || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }

# Most tests wait on sockets, timers and child processes, so two workers share 2 cores well.
# Each file runs whole on one worker; the files that compare measured times run one after the
# other on a single worker (tests/conftest.py). TEST_WORKERS=0 runs the suite serially.
TEST_WORKERS ?= 2

test: lint typecheck browser redis-server ## Lint, type-check, then run the test suite (browser tests included)
	CHROMIUM="$(CHROMIUM)" $(RUN) pytest -n $(TEST_WORKERS) --dist loadfile

# make mutate [MODULE=sse|app/src/services/base/sse.py] [CHILDREN=2]; `python scripts/mutate.py --list` names them.
mutate: sync ## Mutation testing, one module at a time against its own tests: kill rates, survivors
	nice -n 15 $(RUN) python scripts/mutate.py --children $(or $(CHILDREN),1) $(MODULE)

perf: sync ## Measure proxy overhead against direct calls to a loopback upstream
	$(RUN) python scripts/perf.py

profile: sync ## Where the service's time goes under load (py-spy), to read before and after a hot-path change
	$(RUN) python scripts/perf.py profile

.PHONY: docker-check
docker-check: sync ## Build the image, run it and docker-compose.yml for real (needs a Docker engine)
	$(RUN) python scripts/docker_check.py

clean: ## Remove caches
	rm -rf .mypy_cache .pytest_cache .ruff_cache
