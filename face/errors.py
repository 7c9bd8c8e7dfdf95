"""Errors howold raises on bad input: each names the file or value and the problem."""


class HowoldError(Exception):
    """Base class: the CLI prints these as one line instead of a traceback."""


class ImageError(HowoldError):
    """An input could not be read as an image (corrupt, empty, too large, unsupported)."""


class WeightsError(HowoldError):
    """A weights file is missing, truncated, corrupt or does not match the network."""


class DatasetError(HowoldError):
    """A dataset folder is missing, empty or holds no usable labelled images."""


class ConfigError(HowoldError, ValueError):
    """A setting names something that does not exist or cannot be done (an unknown backbone,
    an unfreezing schedule the backbone does not have)."""


class WriteError(HowoldError):
    """A file could not be written (a full disk, a read-only folder): the work finished before
    stays, and the same command resumes from it once the file can be written."""


class ExportError(HowoldError):
    """A model holds a layer the ONNX translation cannot translate, or its translation does
    not answer as the Keras model does."""
