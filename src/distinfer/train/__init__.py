"""``mindspore.train``: Model, callbacks and checkpoint configuration."""
from .callback import Callback, CheckpointConfig, LossMonitor, ModelCheckpoint, RunContext, TimeMonitor
from .model import Model
from . import auto_parallel  # noqa: F401  (AutoParallel; also tells ms.jit how to run a parallel graph)
from ..amp import DynamicLossScaleManager, FixedLossScaleManager, LossScaleManager

__all__ = ["Model", "Callback", "RunContext", "LossMonitor", "TimeMonitor", "CheckpointConfig", "ModelCheckpoint",
           "LossScaleManager", "FixedLossScaleManager", "DynamicLossScaleManager"]
