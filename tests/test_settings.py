from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from src import runner, serve
from src.config import REPO_ROOT, Settings, get_settings


def test_relative_dirs_resolve_against_the_repo_root_whatever_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LOG_DIR", "logs")
    monkeypatch.setenv("BENCHMARKS_DIR", "out/bench")

    settings = Settings(_env_file=None)

    assert settings.log_dir == REPO_ROOT / "logs"
    assert settings.benchmarks_dir == REPO_ROOT / "out" / "bench"


def test_durations_accept_floats_and_keys_split_on_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETRY_MIN_SECONDS", "0.05")
    monkeypatch.setenv("PROXY_API_KEYS", " a1 , b2 ,,")
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-x")

    settings = Settings(_env_file=None)

    assert settings.retry_min_seconds == 0.05
    assert [key.get_secret_value() for key in settings.proxy_api_keys] == ["a1", "b2"]
    assert settings.secrets() == ["sk-x", "a1", "b2"]
    assert "sk-x" not in repr(settings)


def test_admin_keys_split_on_commas_and_are_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXY_API_KEYS", "a1")
    monkeypatch.setenv("PROXY_ADMIN_KEYS", " admin-1 ,, admin-2 ")
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-x")

    settings = Settings(_env_file=None)

    assert [key.get_secret_value() for key in settings.proxy_admin_keys] == ["admin-1", "admin-2"]
    assert settings.secrets() == ["sk-x", "a1", "admin-1", "admin-2"]
    assert "admin-1" not in repr(settings) and "admin-1" not in str(settings.model_dump())


def test_without_a_key_the_emulator_is_the_upstream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)

    settings = Settings(_env_file=None)

    assert settings.uses_emulator
    assert settings.upstream_label == "emulator"


@pytest.mark.parametrize("command", [serve.main, runner.main], ids=["serve", "runner"])
def test_a_refused_setting_ends_a_command_with_one_message_that_names_it(
    command: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_TOKENS_LIMIT", "sk-not-a-number")
    get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit) as ended:
            command()
    finally:
        get_settings.cache_clear()

    message = str(ended.value)
    assert message.startswith("Invalid settings (environment or .env): ")
    assert "max_tokens_limit" in message
    assert "sk-not-a-number" not in message


def test_example_env_documents_every_setting() -> None:
    example = (REPO_ROOT / "app" / "example.env").read_text(encoding="utf-8")
    documented = {
        line.split("=")[0].lstrip("# ").strip() for line in example.splitlines() if "=" in line
    }

    assert {name.upper() for name in Settings.model_fields} <= documented
