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
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ttft_seconds": -0.1},
        {"tokens_per_second": float("nan")},
        {"retry_after_seconds": float("inf")},
        {"rate_limit_probability": 1.5},
        {"server_error_probability": -0.1},
        {"stream_error_probability": 2.0},
    ],
)
def test_out_of_range_values_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        EmulatorConfig(**kwargs)  # type: ignore[arg-type]
