"""vitcli: a Hydra experiment runner for vision transformers."""

__version__ = "0.1.0"
