"""A registry of face backbones behind one interface, in the manner of timm.

Every backbone takes aligned RGB uint8 face chips of its own size (``backbone.chip``)
and returns one feature vector per chip. Modules are imported only when their backbone is
created, so using the dlib backbone never loads TensorFlow.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import ConfigError
from ..registry import Registry
from .base import INPUT_LAYER, Backbone, ChipSpec, KerasBackbone

# name -> "module:factory"; a module registers more with `register_backbone`.
BACKBONES: Registry[Backbone] = Registry("backbone", {
    "dlib-resnet": "face.backbones.dlib_resnet:DlibResNet",
    "dlib-resnet-keras": "face.backbones.dlib_resnet_keras:DlibResNetKeras",
    "vggface2-resnet50": "face.backbones.vggface2_resnet50:VGGFace2ResNet50",
    "vggface2-facenet": "face.backbones.vggface2_facenet:VGGFace2FaceNet",
    "levi-hassner": "face.backbones.levi_hassner:LeviHassner",
    "finetuned-features": "face.backbones.finetuned_features:FineTunedFeatures",
})

# The same network as "dlib-resnet" (equal within 1e-6), run batched by TensorFlow: several times faster.
DEFAULT_BACKBONE = "dlib-resnet-keras"


def register_backbone(name: str, factory: Callable[..., Backbone]) -> None:
    BACKBONES.register(name, factory)


def list_backbones() -> list[str]:
    return BACKBONES.names()


def backbone_factory(name: str) -> Callable[..., Backbone]:
    """The class or function that builds `name`, importing its module (and so registering
    its custom Keras layers, which fine-tuned model files contain)."""
    return BACKBONES.factory(name)


def create_backbone(name: str = DEFAULT_BACKBONE, **kwargs) -> Backbone:
    """Build the backbone called `name`; kwargs go to its constructor (e.g. ``weights=``)."""
    return BACKBONES.create(name, **kwargs)


def describe_backbones() -> list[str]:
    """One line per backbone for `howold backbones`: its name, and the stages progressive
    unfreezing can open where it has them."""
    lines = []
    for name in list_backbones():
        stages = getattr(backbone_factory(name), "stages", ())
        lines.append(f"{name}  (stages: {', '.join(stages)})" if stages else name)
    return lines


def fetch_weights(name: str, source: str | None = None) -> Path:
    """Put backbone `name`'s weights into the cache (`howold fetch`), from `source` if given:
    for backbones whose weights neither ship with howold nor come with dlib."""
    fetch = getattr(backbone_factory(name), "fetch_weights", None)
    if fetch is None:
        raise ConfigError(f"backbone {name!r} has nothing to fetch (its weights come with it or with dlib)")
    return fetch(source)


__all__ = ["INPUT_LAYER", "Backbone", "ChipSpec", "KerasBackbone", "DEFAULT_BACKBONE", "backbone_factory", "create_backbone", "describe_backbones", "fetch_weights", "list_backbones", "register_backbone"]
