"""howold: age, gender and race of every face in a photo or video.

    >>> from face import Analyzer
    >>> Analyzer().analyze("family.jpg")   # one dict per face, largest first
"""
from .analyzer import Analyzer
from .backbones import create_backbone, list_backbones, register_backbone
from .catalogue import list_models
from .errors import DatasetError, HowoldError, ImageError, WeightsError
from .model import load_heads
from .images import load_image

__version__ = "0.1.0"
__all__ = [
    "Analyzer",
    "DatasetError",
    "HowoldError",
    "ImageError",
    "WeightsError",
    "create_backbone",
    "list_backbones",
    "list_models",
    "load_heads",
    "load_image",
    "register_backbone",
]
