import pytest

from src.config import Settings
from src.services.emulator import EmulatorConfig


def test_from_settings_reads_every_emulator_field() -> None:
    settings = Settings(
        _env_file=None,
        emulator_seed=7,
        emulator_ttft_seconds=0.25,
        emulator_tokens_per_second=55.0,
        emulator_rate_limit_probability=0.1,
        emulator_server_error_probability=0.2,
        emulator_stream_error_probability=0.3,
        emulator_retry_after_seconds=2.5,
        emulator_failing_providers=["Beta"],
        emulator_generation_delay_seconds=3.0,
        emulator_capacity=8,
    )

    config = EmulatorConfig.from_settings(settings)

    assert config == EmulatorConfig(
        ttft_seconds=0.25,
        tokens_per_second=55.0,
        rate_limit_probability=0.1,
        server_error_probability=0.2,
        stream_error_probability=0.3,
        retry_after_seconds=2.5,
        seed=7,
        failing_providers=frozenset({"beta"}),
        generation_delay_seconds=3.0,
        capacity=8,
    )


def test_provider_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMULATOR_FAILING_PROVIDERS", "Beta, gamma")
    monkeypatch.setenv("EMULATOR_CAPACITY", "")
    monkeypatch.setenv("EMULATOR_GENERATION_DELAY_SECONDS", "0.5")

    config = EmulatorConfig.from_settings(Settings(_env_file=None))

    assert config.failing_providers == frozenset({"beta", "gamma"})
    assert config.capacity is None
    assert config.generation_delay_seconds == 0.5


def test_settings_default_to_no_failures_no_capacity_and_a_one_second_record_delay() -> None:
    config = EmulatorConfig.from_settings(Settings(_env_file=None))

    assert config.failing_providers == frozenset()
    assert config.capacity is None
    assert config.generation_delay_seconds == 1.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ttft_seconds": -0.1},
        {"tokens_per_second": float("nan")},
        {"retry_after_seconds": float("inf")},
        {"rate_limit_probability": 1.5},
        {"server_error_probability": -0.1},
        {"stream_error_probability": 2.0},
        {"generation_delay_seconds": -1.0},
        {"capacity": 0},
    ],
)
def test_out_of_range_values_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        EmulatorConfig(**kwargs)  # type: ignore[arg-type]
