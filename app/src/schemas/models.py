from pydantic import BaseModel


class Pricing(BaseModel):
    prompt: str
    completion: str


class ModelInfo(BaseModel):
    id: str
    name: str
    context_length: int | None
    pricing: Pricing
    free: bool


class ModelsResponse(BaseModel):
    count: int
    models: list[ModelInfo]


class HealthResponse(BaseModel):
    status: str
    upstream: str
