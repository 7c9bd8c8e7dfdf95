"""The documented shapes of the JSON API: what /openapi.json tells clients (and the
schemathesis fuzzer) each endpoint answers."""
from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field


class ErrorResponse(BaseModel):
    detail: str = Field(description="what went wrong, in words")


class HealthResponse(BaseModel):
    status: Literal["loading", "ready", "failed", "stopping"]
    backbone: Optional[str] = None
    model: Optional[str] = Field(None, description="the server's model: what a request without `model` gets")
    detector: Optional[str] = None
    in_flight: int = 0
    queued: int = 0
    detail: Optional[str] = None


class Face(BaseModel):
    model_config = ConfigDict(extra="allow")

    box: list[int] = Field(min_length=4, max_length=4, description="[left, top, right, bottom] in image pixels")
    detection_confidence: Optional[float] = None
    age: float
    age_interval: list[float] = Field(min_length=2, max_length=2, description="10th-90th percentile")
    age_group: str
    age_group_confidence: float
    gender: str
    gender_confidence: float
    race: str
    race_confidences: dict[str, float]


class ImageSize(BaseModel):
    width: int
    height: int


class Timings(BaseModel):
    decode: float
    detect: float = Field(description="of the batch this upload was analysed in")
    predict: float = Field(description="of the batch this upload was analysed in")
    total: float
    batched_with: int = Field(0, description="other uploads analysed in the same batch")


class AnalyzeResponse(BaseModel):
    faces: list[Face] = Field(description="one per face, largest first")
    model: str = Field(description="the name of the model that read the faces (see /api/models)")
    model_id: str = Field(description="its weights' identity: 16 hex digits of the .keras file's sha256")
    image: ImageSize
    timings_ms: Timings


class ModelFigures(BaseModel):
    dataset: Optional[str] = Field(None, description="the validation set they were measured on; null: the whole validation mixture")
    age_mae: Optional[float] = Field(None, description="mean absolute error of the age, in years")
    gender_accuracy: Optional[float] = None


class ModelInfo(BaseModel):
    name: str = Field(description="what `model` in /api/analyze takes")
    backbone: str
    default: bool = Field(description="whether a request without `model` gets it")
    figures: ModelFigures = Field(description="headline validation figures, from the model's sidecar")


class ModelsResponse(BaseModel):
    models: list[ModelInfo]


def _errors(*codes: int) -> dict[int, dict[str, Any]]:
    descriptions = {
        400: "the upload was interrupted or is not valid multipart",
        413: "upload larger than the limit, or an image with too many pixels (a possible decompression bomb)",
        415: "not an image, a corrupt one, or a content type other than multipart/form-data, image/* or application/octet-stream",
        422: "invalid query parameters (an unknown model, say), or a multipart body without a `file` field",
        500: "the model failed to load, or a model file of the catalogue cannot be read",
        503: "the model is still loading, too many requests are queued, or the server is stopping; see Retry-After",
        504: "the analysis took longer than the server's time limit",
    }
    responses: dict[int, dict[str, Any]] = {code: {"model": ErrorResponse, "description": descriptions[code]} for code in codes}
    if 503 in responses:
        responses[503]["headers"] = {"Retry-After": {"description": "seconds to wait before trying again", "schema": {"type": "integer"}}}
    return responses


_BINARY = {"type": "string", "format": "binary"}
ANALYZE_REQUEST_BODY = {
    "required": True,
    "description": "The photo: a multipart form with a `file` field, or the image bytes as the raw body.",
    "content": {
        "multipart/form-data": {
            "schema": {"type": "object", "required": ["file"], "properties": {"file": {**_BINARY, "description": "the photo"}}},
            "encoding": {"file": {"contentType": "image/*, application/octet-stream"}},
        },
        "image/*": {"schema": _BINARY},
        "application/octet-stream": {"schema": _BINARY},
    },
}
