"""Static checks of the Dockerfile and compose file (no Docker engine runs in CI)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from src.config import REPO_ROOT, Settings
from src.main import create_app

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


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is installed from PyPI on Linux only")
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
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH")
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
        command = service.get("command")
        if command:
            assert module_exists(command[command.index("-m") + 1]), name
        assert set(service.get("environment", {})) <= SETTING_NAMES, name
        for volume in service.get("volumes", []):
            assert volume.split(":")[1] in {"/srv/logs", "/srv/benchmarks"}, volume


def test_compose_ports_match_the_processes_inside() -> None:
    services = COMPOSE["services"]
    assert services["app"]["ports"] == ["${PORT:-8000}:8000"]
    emulator_port = services["emulator"]["environment"]["EMULATOR_PORT"]
    assert services["emulator"]["ports"] == [f"{emulator_port}:{emulator_port}"]
    target = services["app-emulated"]["environment"]["OPENROUTER_BASE_URL"]
    assert target == f"http://emulator:{emulator_port}/api/v1"
    assert services["app-emulated"]["environment"]["OPENROUTER_API_KEY"]
    assert services["emulator"]["profiles"] == ["emulator"]
