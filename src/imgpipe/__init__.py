"""imgpipe: a data-versioned image-classification pipeline (DVC + dvclive + torchvision)."""

__version__ = "0.1.0"
