"""The web app's settings (`WebConfig`, also read from $HOWOLD_WEB_CONFIG by uvicorn's
worker processes) and the limits every part of the app shares."""
from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from typing import Optional

# a child of uvicorn's logger, so that messages show wherever uvicorn's own do
logger = logging.getLogger("uvicorn.error").getChild("howold")

MiB = 1024 * 1024
#: Room for the multipart boundaries and part headers around the file itself.
MULTIPART_OVERHEAD = 64 * 1024
#: Environment variable holding a JSON WebConfig, for `app_from_env` (uvicorn workers).
CONFIG_ENV = "HOWOLD_WEB_CONFIG"
DETECTOR_CHOICES = ("yunet", "hog", "cnn")  # the registry's, spelled out for the OpenAPI enum
#: dlib's CNN detector takes about 16 s on a 1024x1024 image on a laptop-class CPU core, and
#: its cost grows with the pixel count; upsampled 12-megapixel photos would take minutes and
#: hold a slot long after their 504. So on the server it sees at most 1024 px and no upsampling
#: (it still finds faces of about 40 px and up at that scale).
CNN_OPTIONS = {"upsample": 0, "max_detect_side": 1024}
TTA_CHOICES = ("flip", "oversample")


@dataclass(frozen=True)
class WebConfig:
    """How the server is set up. `model`: the server's model, a name from `face.catalogue` or a
    `.keras` path (None: `heads` on `backbone`, by default the default model); requests may
    choose another from the catalogue."""

    model: Optional[str] = None
    backbone: Optional[str] = None
    detector: str = "yunet"
    heads: Optional[str] = None
    max_upload_bytes: int = 10 * MiB
    max_concurrent: int = 4  # uploads admitted at once: those waiting for the model go through it in one batch
    max_queue: int = 8  # analyses waiting for a slot; beyond that: 503 + Retry-After
    request_timeout_s: float = 30.0  # queueing + analysis; beyond that: 504
    cors_origins: tuple[str, ...] = ()  # no CORS headers unless origins are given
    max_connections: int = 64  # uvicorn's limit_concurrency in `serve`: bounds memory held by uploads

    def __post_init__(self) -> None:
        if self.detector not in DETECTOR_CHOICES:
            raise ValueError(f"unknown detector {self.detector!r}; choose one of {', '.join(DETECTOR_CHOICES)}")
        if self.max_upload_bytes <= 0 or self.max_concurrent <= 0 or self.max_queue < 0 or self.request_timeout_s <= 0:
            raise ValueError("max_upload_bytes, max_concurrent and request_timeout_s must be positive, max_queue >= 0")
        object.__setattr__(self, "cors_origins", tuple(self.cors_origins))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "WebConfig":
        values = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"{CONFIG_ENV}: unknown settings {sorted(unknown)}")
        return cls(**values)
