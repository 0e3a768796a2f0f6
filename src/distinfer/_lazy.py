"""Lazy re-exports for the MindSpore-named packages (PEP 562 module ``__getattr__``).

``import distinfer`` stays cheap (no protobuf, safetensors, onnx or ml_dtypes) while
``ms.load_checkpoint``, ``ms.export``, ``ms.dataset`` ... are there the moment they are used.

>>> import sys, types
>>> from distinfer._lazy import lazy_exports
>>> pkg = types.ModuleType("pkg_demo")
>>> pkg.__getattr__, pkg.__dir__ = lazy_exports("pkg_demo", {"sqrt": "math", "json": "json"})
>>> sys.modules["pkg_demo"] = pkg
>>> pkg.sqrt(9.0), pkg.json.dumps([1])
(3.0, '[1]')
"""
from __future__ import annotations

import importlib
import sys
from typing import Callable

__all__ = ["lazy_exports"]


def lazy_exports(package: str, names: dict[str, str]) -> tuple[Callable, Callable]:
    """``(__getattr__, __dir__)`` for ``package``: attribute ``name`` is imported from module
    ``names[name]`` (relative to ``package`` when it starts with a dot) on first access, or is that
    module itself when the module's last component is ``name``; then it is cached on the package."""

    def __getattr__(name: str):
        where = names.get(name)
        if where is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(where, package)
        value = module if where.rsplit(".", 1)[-1] == name else getattr(module, name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__
