"""``mindspore.train``: Model, callbacks and checkpoint configuration."""
from .model import Model

__all__ = ["Model"]
