"""``mindspore.runtime``: device runtime settings, accepted and checked as MindSpore checks them.

distinfer computes with numpy on the host, so the device memory pool, kernel launch and core
binding settings have no effect: each setter validates its arguments (TypeError, ValueError, and
RuntimeError when called twice, as MindSpore), records them, and logs at debug level that they do
nothing on CPUs. The memory queries report what MindSpore reports for its CPU backend: zeros.

>>> import distinfer as ms
>>> import distinfer.runtime as rt
>>> rt.memory_allocated(), rt.memory_stats()["max_reserved_memory"]
(0, 0)
"""
from __future__ import annotations

import logging
import re
from typing import Any, Optional

__all__ = ["set_memory", "memory_stats", "memory_reserved", "max_memory_reserved", "memory_allocated",
           "max_memory_allocated", "empty_cache", "reset_peak_memory_stats", "reset_max_memory_reserved",
           "reset_max_memory_allocated", "memory_summary", "launch_blocking", "dispatch_threads_num",
           "set_cpu_affinity", "set_kernel_launch_group", "set_kernel_launch_capture", "synchronize"]

log = logging.getLogger(__name__)

_MEMORY = re.compile(r"[1-9][0-9]*(\.)?[0-9]*GB|0\.[0-9]*GB")
_RESERVE = re.compile(r"[0-9][0-9]*(\.)?[0-9]*GB|0\.[0-9]*GB")
_MODULES = ("main", "runtime", "pynative", "minddata")

# What was set, by setter (each may be set once per process, as in MindSpore).
_settings: dict[str, dict] = {}


def _once(name: str, message: str, **values: Any) -> None:
    if name in _settings:
        raise RuntimeError(message)
    _settings[name] = values
    log.debug("runtime.%s(%s) recorded; it has no effect on CPUs", name,
              ", ".join(f"{k}={v!r}" for k, v in values.items()))


def _check_type(api: str, name: str, value: Any, kind: type) -> None:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"For '{api}', the type of '{name}' should be {kind.__name__}, but got "
                        f"{type(value).__name__} ({value!r:.80}).")


def _check_size(value: str, pattern: re.Pattern) -> None:
    if not pattern.fullmatch(value):
        raise ValueError(f"The memory value should be in correct format! It must be a string ending with 'GB', "
                         f"in addition to that, it must contain only numbers or decimal points, such as \"5GB\" or "
                         f"\"3.5GB\", but got {value}.")
    if pattern is _MEMORY and value in ("0GB", "0.0GB"):
        raise ValueError("The memory value should not be \"0GB\".")


def set_memory(init_size: str = "2GB", increase_size: str = "2GB", max_size: str = "1024GB",
               optimize_level: str = "O0", huge_page_reserve_size: str = "0GB") -> None:
    """Device memory pool sizes ("xxGB"); no effect on CPUs. A second call is a RuntimeError.

    >>> import distinfer.runtime as rt
    >>> rt.set_memory(max_size="28")
    Traceback (most recent call last):
    ...
    ValueError: The memory value should be in correct format! It must be a string ending with 'GB', in addition to that, it must contain only numbers or decimal points, such as "5GB" or "3.5GB", but got 28.
    """
    for name, value in (("init_size", init_size), ("increase_size", increase_size), ("max_size", max_size),
                        ("optimize_level", optimize_level), ("huge_page_reserve_size", huge_page_reserve_size)):
        _check_type("set_memory", name, value, str)
    if "set_memory" in _settings:
        raise RuntimeError("The 'set_memory' can not be set repeatedly.")
    for value in (init_size, increase_size, max_size):
        _check_size(value, _MEMORY)
    _check_size(huge_page_reserve_size, _RESERVE)
    if optimize_level not in ("O0", "O1"):
        raise ValueError(f"The optimize_level must be one of ['O0', 'O1'], but got {optimize_level}.")
    _once("set_memory", "", init_size=init_size, increase_size=increase_size, max_size=max_size,
          optimize_level=optimize_level, huge_page_reserve_size=huge_page_reserve_size)


def memory_stats() -> dict:
    """The memory pool's statistics: all zeros on CPUs, as MindSpore's CPU backend reports them."""
    pool = {"block_unit_size": 0, "block_counts": 0, "blocks_info": {}}
    return {"total_reserved_memory": 0, "total_allocated_memory": 0, "total_idle_memory": 0,
            "total_eager_free_memory": 0, "max_reserved_memory": 0, "max_allocated_memory": 0,
            "common_mem_pool_stats": dict(pool), "persistent_mem_pool_stats": dict(pool)}


def memory_reserved() -> int:
    """Bytes the device memory pool holds: 0 on CPUs."""
    return 0


def max_memory_reserved() -> int:
    """Peak of :func:`memory_reserved`: 0 on CPUs."""
    return 0


def memory_allocated() -> int:
    """Bytes of the pool in use by tensors: 0 on CPUs."""
    return 0


def max_memory_allocated() -> int:
    """Peak of :func:`memory_allocated`: 0 on CPUs."""
    return 0


def empty_cache() -> None:
    """Release the pool's cached blocks; nothing to release on CPUs."""


def reset_peak_memory_stats() -> None:
    """Reset the peaks; they are always 0 on CPUs."""


reset_max_memory_reserved = reset_peak_memory_stats
reset_max_memory_allocated = reset_peak_memory_stats


def memory_summary() -> str:
    """MindSpore's memory table, with the CPU backend's zeros.

    >>> import distinfer.runtime as rt
    >>> print(rt.memory_summary().splitlines()[1])
    |               Memory summary                |
    """
    rows = [("Reserved memory", 0), ("Allocated memory", 0), ("Idle memory", 0), ("Eager free memory", 0),
            ("Max reserved memory", 0), ("Max allocated memory", 0)]
    lines = ["=" * 45, " {:^43} ".format("Memory summary"), "=" * 45, " {:<20} | {:<20} ".format("Metric", "Data")]
    for name, value in rows:
        lines += ["-" * 45, " {:<20} | {:<20} ".format(name, f"{value:6d} B  ")]
    lines.append("=" * 45)
    return "|" + "|\n|".join(lines) + "|\n"


def launch_blocking() -> None:
    """Launch device kernels synchronously; numpy kernels always are."""
    log.debug("runtime.launch_blocking(): kernels already run synchronously on CPUs")


def dispatch_threads_num(threads_num: int) -> None:
    """Threads of the op dispatcher; no effect on CPUs. A second call is a RuntimeError."""
    _check_type("dispatch_threads_num", "threads_num", threads_num, int)
    if threads_num <= 0:
        raise ValueError(f"For 'dispatch_threads_num', 'threads_num' must be a positive int, but got {threads_num}.")
    _once("dispatch_threads_num", "The 'dispatch_threads_num' can not be set repeatedly.", threads_num=threads_num)


def set_cpu_affinity(enable_affinity: bool, affinity_cpu_list: Optional[list] = None,
                     module_to_cpu_dict: Optional[dict] = None, bind_file: Optional[str] = None) -> None:
    """Bind MindSpore's thread groups to cores; checked and recorded, no binding is done.

    >>> import distinfer.runtime as rt
    >>> rt.set_cpu_affinity(True, ["0-3", "8"])
    Traceback (most recent call last):
    ...
    ValueError: For 'set_cpu_affinity', each element of 'affinity_cpu_list' must look like 'cpuidX-cpuidY', but got '8'.
    """
    _check_type("set_cpu_affinity", "enable_affinity", enable_affinity, bool)
    if affinity_cpu_list is not None:
        _check_type("set_cpu_affinity", "affinity_cpu_list", affinity_cpu_list, list)
        for item in affinity_cpu_list:
            _check_type("set_cpu_affinity", "affinity_cpu_list element", item, str)
            if not re.fullmatch(r"\d+-\d+", item):
                raise ValueError(f"For 'set_cpu_affinity', each element of 'affinity_cpu_list' must look like "
                                 f"'cpuidX-cpuidY', but got {item!r}.")
    if module_to_cpu_dict is not None:
        _check_type("set_cpu_affinity", "module_to_cpu_dict", module_to_cpu_dict, dict)
        for key, cores in module_to_cpu_dict.items():
            _check_type("set_cpu_affinity", "module_to_cpu_dict key", key, str)
            _check_type("set_cpu_affinity", f"module_to_cpu_dict[{key!r}]", cores, list)
            if any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in cores):
                raise ValueError(f"For 'set_cpu_affinity', the cores of module {key!r} must be non-negative ints, "
                                 f"but got {cores}.")
    _once("set_cpu_affinity", "The 'mindspore.runtime.set_cpu_affinity' cannot be set repeatedly.",
          enable_affinity=enable_affinity, affinity_cpu_list=affinity_cpu_list,
          module_to_cpu_dict=module_to_cpu_dict, bind_file=bind_file)


def set_kernel_launch_group(thread_num: int = 2, kernel_group_num: int = 8) -> None:
    """Parallel kernel launch groups; no effect on CPUs."""
    _check_type("set_kernel_launch_group", "thread_num", thread_num, int)
    _check_type("set_kernel_launch_group", "kernel_group_num", kernel_group_num, int)
    if "set_kernel_launch_capture" in _settings:
        raise RuntimeError("The kernel launch group and kernel launch capture can not be set together")
    if thread_num < 1:
        raise ValueError(f"The value of thread_num should be at least 1, but got {thread_num}")
    if kernel_group_num < 1:
        raise ValueError(f"The value of kernel_group_num should be at least 1, but got {kernel_group_num}")
    if kernel_group_num % thread_num:
        raise ValueError(f"Invalid parameter value, kernel_group_num: {kernel_group_num} cannot be evenly divisible "
                         f"by thread_num: {thread_num}")
    _once("set_kernel_launch_group", "The 'kernel_launch_group' can not be set repeatedly.", thread_num=thread_num,
          kernel_group_num=kernel_group_num)


def set_kernel_launch_capture(enable_capture_graph: bool, op_capture_skip: Optional[list] = None) -> None:
    """Capture kernel launches into device graphs; no effect on CPUs."""
    _check_type("set_kernel_launch_capture", "enable_capture_graph", enable_capture_graph, bool)
    if "set_kernel_launch_group" in _settings:
        raise RuntimeError("The kernel launch group and kernel launch capture can not be set together")
    if op_capture_skip is not None and not isinstance(op_capture_skip, list):
        raise TypeError("op_capture_skip must be a list")
    _settings["set_kernel_launch_capture"] = {"enable_capture_graph": enable_capture_graph,
                                              "op_capture_skip": op_capture_skip}
    log.debug("runtime.set_kernel_launch_capture(%r) recorded; it has no effect on CPUs", enable_capture_graph)


def synchronize() -> None:
    """Wait for the device's queued work; numpy work is already done when a call returns."""
