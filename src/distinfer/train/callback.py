"""Training callbacks: ``LossMonitor``, ``TimeMonitor``, ``CheckpointConfig``, ``ModelCheckpoint``.

``ModelCheckpoint`` follows MindSpore's file naming (spec §1.9): ``<prefix>-<epoch>_<step>.ckpt``
with the step counted within the epoch, a ``_N`` suffix on the prefix when files with that prefix
already exist, ``keep_checkpoint_max`` retention by age, ``append_info`` (``epoch_num``,
``step_num`` cumulative) and ``integrated_save`` (False: each rank writes its own slices).

>>> cfg = CheckpointConfig(save_checkpoint_steps=10, keep_checkpoint_max=2, integrated_save=False)
>>> cfg.save_checkpoint_steps, cfg.integrated_save
(10, False)
"""
from __future__ import annotations

import logging
import os
import re
import sys
import time
from types import SimpleNamespace
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["Callback", "RunContext", "LossMonitor", "TimeMonitor", "CheckpointConfig", "ModelCheckpoint"]


class RunContext:
    """What callbacks see: ``original_args()`` returns the ``cb_params`` namespace.

    >>> from types import SimpleNamespace
    >>> run = RunContext(SimpleNamespace(cur_epoch_num=1, cur_step_num=4))
    >>> run.original_args().cur_step_num, run.get_stop_requested()
    (4, False)
    >>> run.request_stop(); run.get_stop_requested()  # Model.train stops after the current step
    True
    """

    def __init__(self, cb_params: SimpleNamespace) -> None:
        self._params = cb_params
        self._stop = False

    def original_args(self) -> SimpleNamespace:
        return self._params

    def request_stop(self) -> None:
        self._stop = True

    def get_stop_requested(self) -> bool:
        return self._stop


class Callback:
    """Base callback; every hook is optional.

    As in MindSpore, the ``on_train_*`` hooks call the older names (``begin``, ``epoch_begin``,
    ``step_begin``, ``step_end``, ``epoch_end``, ``end``), which do nothing by default; a
    callback may override either set. A callback is also a context manager that ``Model.train``
    enters for the run.

    >>> from types import SimpleNamespace
    >>> class PrintStep(Callback):
    ...     def step_end(self, run_context):  # the older name, called by on_train_step_end
    ...         print("step", run_context.original_args().cur_step_num)
    >>> PrintStep().on_train_step_end(RunContext(SimpleNamespace(cur_step_num=3)))
    step 3
    """

    def __enter__(self) -> "Callback":
        return self

    def __exit__(self, *err: Any) -> None:
        return None

    # MindSpore's older hook names (no-ops here).
    def begin(self, run_context: RunContext) -> None: ...
    def epoch_begin(self, run_context: RunContext) -> None: ...
    def step_begin(self, run_context: RunContext) -> None: ...
    def step_end(self, run_context: RunContext) -> None: ...
    def epoch_end(self, run_context: RunContext) -> None: ...
    def end(self, run_context: RunContext) -> None: ...

    def on_train_begin(self, run_context: RunContext) -> None:
        self.begin(run_context)

    def on_train_epoch_begin(self, run_context: RunContext) -> None:
        self.epoch_begin(run_context)

    def on_train_step_begin(self, run_context: RunContext) -> None:
        self.step_begin(run_context)

    def on_train_step_end(self, run_context: RunContext) -> None:
        self.step_end(run_context)

    def on_train_epoch_end(self, run_context: RunContext) -> None:
        self.epoch_end(run_context)

    def on_train_end(self, run_context: RunContext) -> None:
        self.end(run_context)


def _loss_value(outputs: Any) -> float:
    if isinstance(outputs, (tuple, list)):
        outputs = outputs[0]
    arr = outputs.asnumpy() if hasattr(outputs, "asnumpy") else np.asarray(outputs)
    return float(np.asarray(arr, dtype=np.float64).reshape(-1)[0])


class LossMonitor(Callback):
    """Prints ``epoch: E step: S, loss is L`` every ``per_print_times`` steps.

    >>> import numpy as np, distinfer as ms, distinfer.dataset as ds
    >>> from distinfer import nn
    >>> data = ds.NumpySlicesDataset((np.ones((4, 2), np.float32), np.zeros(4, np.int32)), ["x", "y"]).batch(2)
    >>> net = nn.Dense(2, 2, weight_init="zeros", bias_init="zeros")
    >>> model, monitor = ms.Model(net, nn.CrossEntropyLoss(), nn.SGD(net.trainable_params(), 0.5)), LossMonitor(2)
    >>> model.train(2, data, callbacks=monitor)  # doctest: +ELLIPSIS
    epoch: 1 step: 2, loss is ...
    epoch: 2 step: 2, loss is ...
    >>> [round(loss, 4) for loss in monitor.losses]  # every step's loss, printed or not
    [0.6931, 0.2014, 0.1214, 0.0876]
    """

    def __init__(self, per_print_times: int = 1) -> None:
        if not isinstance(per_print_times, int) or per_print_times < 0:
            raise ValueError(f"LossMonitor: per_print_times must be an int >= 0, got {per_print_times!r}")
        self._per_print_times = per_print_times
        self.losses: list[float] = []

    def on_train_step_end(self, run_context: RunContext) -> None:
        cb = run_context.original_args()
        loss = _loss_value(cb.net_outputs)
        self.losses.append(loss)
        step_in_epoch = (cb.cur_step_num - 1) % cb.batch_num + 1
        if np.isnan(loss) or np.isinf(loss):
            raise ValueError(f"epoch: {cb.cur_epoch_num} step: {step_in_epoch}. Invalid loss, terminating training.")
        if self._per_print_times and cb.cur_step_num % self._per_print_times == 0:
            print(f"epoch: {cb.cur_epoch_num} step: {step_in_epoch}, loss is {loss}", flush=True)


class TimeMonitor(Callback):
    """Prints each epoch's time and the time per step.

    >>> import numpy as np, distinfer as ms, distinfer.dataset as ds
    >>> from distinfer import nn
    >>> data = ds.NumpySlicesDataset((np.ones((4, 2), np.float32), np.zeros(4, np.int32)), ["x", "y"]).batch(2)
    >>> net = nn.Dense(2, 2); model = ms.Model(net, nn.CrossEntropyLoss(), nn.SGD(net.trainable_params(), 0.5))
    >>> model.train(1, data, callbacks=TimeMonitor())  # doctest: +ELLIPSIS
    epoch time: ... ms, per step time: ... ms
    """

    def __init__(self, data_size: int | None = None) -> None:
        self.data_size = data_size
        self._start = 0.0

    def on_train_epoch_begin(self, run_context):
        self._start = time.perf_counter()

    def on_train_epoch_end(self, run_context):
        cb = run_context.original_args()
        elapsed = (time.perf_counter() - self._start) * 1000
        steps = self.data_size or cb.batch_num
        print(f"epoch time: {elapsed:.3f} ms, per step time: {elapsed / max(steps, 1):.3f} ms", flush=True)


class CheckpointConfig:
    """MindSpore 2.10's ``CheckpointConfig`` arguments (spec §1.9).

    >>> cfg = CheckpointConfig(save_checkpoint_steps=2, append_info=["epoch_num"], format="safetensors")
    >>> cfg.save_checkpoint_steps, cfg.keep_checkpoint_max, cfg.append_info, cfg.format
    (2, 5, ['epoch_num'], 'safetensors')
    >>> CheckpointConfig(enc_key=b"0" * 16)
    Traceback (most recent call last):
    ...
    ValueError: CheckpointConfig: checkpoint encryption (enc_key) is not supported by distinfer
    """

    def __init__(self, save_checkpoint_steps: int = 1, save_checkpoint_seconds: int = 0, keep_checkpoint_max: int = 5,
                 keep_checkpoint_per_n_minutes: int = 0, integrated_save: bool = True, async_save: bool = False,
                 saved_network=None, append_info=None, enc_key=None, enc_mode: str = "AES-GCM",
                 exception_save: bool = False, crc_check: bool = False, remove_redundancy: bool = False,
                 format: str = "ckpt", **kwargs: Any) -> None:
        if save_checkpoint_steps is not None and save_checkpoint_steps <= 0 and not save_checkpoint_seconds:
            raise ValueError(f"CheckpointConfig: save_checkpoint_steps must be > 0, got {save_checkpoint_steps}")
        if keep_checkpoint_max is not None and keep_checkpoint_max <= 0:
            raise ValueError(f"CheckpointConfig: keep_checkpoint_max must be > 0, got {keep_checkpoint_max}")
        if enc_key is not None:
            raise ValueError("CheckpointConfig: checkpoint encryption (enc_key) is not supported by distinfer")
        if format not in ("ckpt", "safetensors"):
            raise ValueError(f"CheckpointConfig: format must be 'ckpt' or 'safetensors', got {format!r}")
        for item in append_info or []:
            if not (item in ("epoch_num", "step_num") or isinstance(item, dict)):
                raise ValueError(f"CheckpointConfig: append_info entries are 'epoch_num', 'step_num' or a dict, "
                                 f"got {item!r}")
        self.save_checkpoint_steps = save_checkpoint_steps
        self.save_checkpoint_seconds = save_checkpoint_seconds
        self.keep_checkpoint_max = keep_checkpoint_max
        self.keep_checkpoint_per_n_minutes = keep_checkpoint_per_n_minutes
        self.integrated_save = integrated_save
        self.async_save = async_save
        self.saved_network = saved_network
        self.append_info = list(append_info or [])
        self.crc_check = crc_check
        self.exception_save = exception_save
        self.remove_redundancy = remove_redundancy
        self.format = format


class ModelCheckpoint(Callback):
    """``ModelCheckpoint(prefix='CKP', directory=None, config=None)``: saves during training.

    >>> import os, tempfile, numpy as np, distinfer as ms, distinfer.dataset as ds
    >>> from distinfer import nn
    >>> data = ds.NumpySlicesDataset((np.ones((4, 2), np.float32), np.zeros(4, np.int32)), ["x", "y"]).batch(2)
    >>> net = nn.Dense(2, 2); model = ms.Model(net, nn.CrossEntropyLoss(), nn.SGD(net.trainable_params(), 0.5))
    >>> d, cfg = tempfile.mkdtemp(), CheckpointConfig(save_checkpoint_steps=2)
    >>> model.train(2, data, callbacks=ModelCheckpoint("net", d, cfg))  # 2 steps an epoch: one file each
    >>> model.train(1, data, callbacks=ModelCheckpoint("net", d, cfg))  # "net" files exist: prefix net_1
    >>> sorted(os.listdir(d))
    ['net-1_2.ckpt', 'net-2_2.ckpt', 'net_1-1_2.ckpt']
    """

    def __init__(self, prefix: str = "CKP", directory: str | None = None, config: CheckpointConfig | None = None,
                 **kwargs: Any) -> None:
        if not isinstance(prefix, str) or not prefix or "/" in prefix:
            raise ValueError(f"ModelCheckpoint: prefix must be a non-empty str without '/', got {prefix!r}")
        self._config = config or CheckpointConfig()
        self._directory = os.path.abspath(directory or ".")
        os.makedirs(self._directory, exist_ok=True)
        self._prefix = self._unique_prefix(prefix)
        self._last_saved_step = 0
        self.latest_ckpt_file_name = ""

    def _unique_prefix(self, prefix: str) -> str:
        """MindSpore's rule: ``prefix_N`` with N one more than the largest suffix among existing
        ``prefix-*.ckpt`` (counts as 0) and ``prefix_K-*.ckpt`` files; ``prefix`` when none exist."""
        ext = "." + self._config.format
        suffix = 0
        for name in os.listdir(self._directory):
            if not name.endswith(ext) or name.endswith("_breakpoint" + ext) or not name.startswith(prefix):
                continue
            rest = name[len(prefix):]
            if rest.startswith("-"):
                suffix = max(suffix, 1)
            else:
                match = re.match(r"_(\d+)-", rest)
                if match:
                    suffix = max(suffix, int(match.group(1)) + 1)
        return f"{prefix}_{suffix}" if suffix else prefix

    def on_train_step_end(self, run_context: RunContext) -> None:
        cb = run_context.original_args()
        steps = self._config.save_checkpoint_steps
        if steps and cb.cur_step_num % steps == 0:
            self._save(cb)

    def on_train_end(self, run_context: RunContext) -> None:
        cb = run_context.original_args()
        if cb.cur_step_num != self._last_saved_step:
            self._save(cb)

    def _retain(self) -> None:
        """Delete the oldest checkpoints so that a new one keeps at most ``keep_checkpoint_max``."""
        keep = self._config.keep_checkpoint_max
        if not keep:
            return
        ext = "." + self._config.format
        pattern = re.compile(re.escape(self._prefix) + r"-[^a-zA-Z]*" + re.escape(ext) + "$")
        files = sorted((os.path.join(self._directory, f) for f in os.listdir(self._directory) if pattern.match(f)),
                       key=os.path.getmtime)
        while len(files) >= keep:
            os.remove(files.pop(0))

    def _save(self, cb: SimpleNamespace) -> None:
        from ..serialization import save_checkpoint

        step_in_epoch = (cb.cur_step_num - 1) % cb.batch_num + 1
        name = f"{self._prefix}-{cb.cur_epoch_num}_{step_in_epoch}.{self._config.format}"
        path = os.path.join(self._directory, name)
        self._retain()
        append = {}
        for item in self._config.append_info:
            if item == "epoch_num":
                append["epoch_num"] = int(cb.cur_epoch_num)
            elif item == "step_num":
                append["step_num"] = int(cb.cur_step_num)
            else:
                append.update(item)
        network = self._config.saved_network or cb.train_network
        save_checkpoint(network, path, integrated_save=self._config.integrated_save,
                        async_save=self._config.async_save, append_dict=append or None,
                        crc_check=self._config.crc_check, format=self._config.format)
        self._last_saved_step = cb.cur_step_num
        self.latest_ckpt_file_name = path
        log.info("saved checkpoint %s", path)


def _is_tty() -> bool:
    return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
