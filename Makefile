# Every target bootstraps uv and installs the locked environment itself,
# so a fresh clone needs nothing but `make run` or `make test`.
SHELL := /bin/bash
export UV_PYTHON_DOWNLOADS := never
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
RUN := $(UV) run --frozen
# Runs without installing anything more: `uv run` would otherwise add the dev group.
SERVE := $(UV) run --frozen --no-dev --no-sync

.DEFAULT_GOAL := help
.PHONY: help uv sync sync-runtime run emulator bench test lint typecheck format perf mutate clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-13s %s\n", $$1, $$2}'

uv: ## Install uv with pip when it is missing
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 \
		|| python3 -m pip install --quiet uv \
		|| python3 -m pip install --quiet --user --break-system-packages uv

sync: uv ## Install the locked dependencies, dev tools included, into .venv
	$(UV) sync --frozen

# What serving needs and nothing more, as the image installs it (--no-dev); --inexact keeps the
# dev tools a developer already has in .venv instead of uninstalling them.
sync-runtime: uv ## Install only the locked runtime dependencies into .venv
	$(UV) sync --frozen --no-dev --inexact

run: sync-runtime ## Serve the app on HOST:PORT (the embedded emulator when OPENROUTER_API_KEY is empty)
	PYTHONPATH=app $(SERVE) python -m src.serve

emulator: sync-runtime ## Serve the OpenRouter emulator alone on EMULATOR_HOST:EMULATOR_PORT
	PYTHONPATH=app $(SERVE) python -m src.services.emulator

# make bench FILE=prompts/en.txt MODELS=emulator/small,emulator/large RUNS=3 [CONCURRENCY=2]
# make bench PROMPT_TOKENS=256 OUTPUT_TOKENS=128 WARMUP=2 MODELS=emulator/small
# make bench DATASET=chats.jsonl TURNS=3 MODELS=emulator/small
#   [PROVIDERS=alpha,beta or all] [PROVIDER_SORT=price|throughput|latency]
bench: sync-runtime ## Benchmark on the running service (FILE, DATASET or PROMPT_TOKENS; MODELS, RUNS, PROVIDERS): progress bar, table, cost
	PYTHONPATH=app $(SERVE) python -m src.cli benchmark --models "$(MODELS)" \
		$(if $(FILE),--file "$(FILE)") $(if $(DATASET),--dataset "$(DATASET)") \
		$(if $(PROMPT_TOKENS),--prompt-tokens $(PROMPT_TOKENS)) \
		$(if $(PROMPT_TOKENS_STDEV),--prompt-tokens-stdev $(PROMPT_TOKENS_STDEV)) \
		$(if $(PROMPTS),--prompts $(PROMPTS)) $(if $(SEED),--seed $(SEED)) \
		$(if $(OUTPUT_TOKENS),--output-tokens $(OUTPUT_TOKENS)) \
		$(if $(OUTPUT_TOKENS_STDEV),--output-tokens-stdev $(OUTPUT_TOKENS_STDEV)) \
		$(if $(TURNS),--turns $(TURNS)) $(if $(WARMUP),--warmup $(WARMUP)) \
		$(if $(PROVIDERS),--providers "$(PROVIDERS)") $(if $(PROVIDER_SORT),--provider-sort $(PROVIDER_SORT)) \
		$(if $(RUNS),--runs $(RUNS)) $(if $(CONCURRENCY),--concurrency $(CONCURRENCY)) \
		$(if $(RATE),--rate $(RATE)) $(if $(DURATION),--duration $(DURATION)) \
		$(if $(SWEEP),--sweep $(SWEEP)) $(if $(SWEEP_VALUES),--sweep-values $(SWEEP_VALUES)) \
		$(if $(TTFT_SLO),--ttft-slo $(TTFT_SLO)) $(if $(LATENCY_SLO),--latency-slo $(LATENCY_SLO)) \
		$(if $(TPOT_SLO),--tpot-slo $(TPOT_SLO))

lint: sync ## ruff check and ruff format --check
	$(RUN) ruff check .
	$(RUN) ruff format --check .

typecheck: sync ## mypy, strict
	$(RUN) mypy

format: sync ## Apply ruff's fixes and formatting
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

test: lint typecheck ## Lint, type-check, then run the test suite
	$(RUN) pytest

# make mutate [MODULE=sse|app/src/services/base/sse.py]; `python scripts/mutate.py --list` names them.
mutate: sync ## Mutation testing, one module at a time against its own tests: kill rates, survivors
	nice -n 15 $(RUN) python scripts/mutate.py $(MODULE)

perf: sync ## Measure proxy overhead against direct calls to a loopback upstream
	$(RUN) python scripts/perf.py

.PHONY: docker-check
docker-check: sync ## Build the image, run it and docker-compose.yml for real (needs a Docker engine)
	$(RUN) python scripts/docker_check.py

clean: ## Remove caches
	rm -rf .mypy_cache .pytest_cache .ruff_cache
