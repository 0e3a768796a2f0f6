"""``mindspore.train``: Model, callbacks and checkpoint configuration."""
from .callback import Callback, CheckpointConfig, LossMonitor, ModelCheckpoint, RunContext, TimeMonitor
from .model import Model

__all__ = ["Model", "Callback", "RunContext", "LossMonitor", "TimeMonitor", "CheckpointConfig", "ModelCheckpoint"]
