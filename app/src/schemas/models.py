from pydantic import BaseModel, Field


class Pricing(BaseModel):
    prompt: str | None
    completion: str | None


class ModelInfo(BaseModel):
    id: str
    name: str
    context_length: int | None
    pricing: Pricing | None = Field(description="USD per token; null when the upstream gives none")
    free: bool


class ModelsResponse(BaseModel):
    count: int
    models: list[ModelInfo]


class ProviderInfo(BaseModel):
    provider: str = Field(description="The slug `provider=` takes (pinned with no fallback)")
    name: str = Field(description="The provider's name, as answers name it")
    context_length: int | None
    quantization: str | None
    pricing: Pricing | None = Field(description="USD per token; null when the upstream gives none")


class ModelProviders(BaseModel):
    model: str
    count: int
    providers: list[ProviderInfo]


class JobsHealth(BaseModel):
    """Where runs are kept and who runs them: JOBS_BACKEND, and with redis its reachability
    and live runners."""

    backend: str = Field(examples=["redis"])
    redis: str | None = Field(
        default=None,
        description="JOBS_BACKEND=redis: ok, or unreachable",
        examples=["ok"],
        exclude_if=lambda value: value is None,
    )
    runners: int | None = Field(
        default=None,
        description="JOBS_BACKEND=redis: runner processes that showed they are alive "
        "(absent while Redis is unreachable)",
        examples=[2],
        exclude_if=lambda value: value is None,
    )


class HealthResponse(BaseModel):
    status: str
    upstream: str
    transport: str  # UPSTREAM_TRANSPORT: "wire" or "httpx"
    proxy: str | None = Field(
        default=None,
        description="The proxy upstream requests go through (without credentials), or null",
        examples=["http://proxy.corp:3128"],
    )
    jobs: JobsHealth
