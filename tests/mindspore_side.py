"""The MindSpore side of tests/test_mindspore_interop.py, run by MindSpore's own Python (never by distinfer's).

    /path/to/mindspore/python tests/mindspore_side.py TASKS.json REPORT.json

``TASKS.json`` is a list of tasks; the report maps each task's index to ``"ok"`` or the error
MindSpore raised. Tasks:

* ``{"kind": "run", "file": F, "inputs": NPZ, "output": NPZ}``: ``mindspore.load(F)``, run it with
  ``nn.GraphCell`` on the arrays ``NPZ`` holds (``x0``, ``x1``...), save the outputs (``y0``...);
* ``{"kind": "load", "file": F}``: ``mindspore.load(F)`` only (per-rank files cannot run here);
* ``{"kind": "export_gpt", "config": {...}, "params": NPZ, "ids": NPZ, "file": F, "output": NPZ}``:
  build ``examples/gpt_block.py``'s GPTBlock with MindSpore (the example is written against the
  MindSpore API), set its parameters, export it as MINDIR to ``F`` and save its prediction;
* ``{"kind": "schema", "output": JSON}``: dump ``mind_ir_pb2``'s messages, fields and enums.

MindSpore is imported inside the functions, so importing this module needs no MindSpore.
"""
from __future__ import annotations

import json
import os
import sys
import traceback


def run_graph(task: dict) -> None:
    import numpy as np
    import mindspore as ms
    from mindspore import nn

    with np.load(task["inputs"]) as z:
        inputs = [ms.Tensor(z[f"x{i}"]) for i in range(len(z.files))]
    out = nn.GraphCell(ms.load(task["file"]))(*inputs)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    np.savez(task["output"], **{f"y{i}": o.asnumpy() for i, o in enumerate(outs)})


def load_graph(task: dict) -> None:
    import mindspore as ms

    ms.load(task["file"])


def export_gpt(task: dict) -> None:
    import numpy as np
    import mindspore as ms
    from mindspore.common import initializer

    # The example imports distinfer's names; here they are MindSpore's (the point of the example).
    sys.modules["distinfer"] = ms
    sys.modules["distinfer.common"] = ms.common
    sys.modules["distinfer.common.initializer"] = initializer
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
    import gpt_block

    net = gpt_block.GPTBlock(**task["config"])
    with np.load(task["params"]) as z:
        for name, p in net.parameters_and_names():
            p.set_data(ms.Tensor(z[name]))
    with np.load(task["ids"]) as z:
        ids = ms.Tensor(z["ids"])
    np.savez(task["output"], y0=ms.Model(net).predict(ids).asnumpy())
    ms.export(net, ids, file_name=task["file"][: -len(".mindir")], file_format="MINDIR")


def schema(task: dict) -> None:
    from mindspore.train import mind_ir_pb2

    with open(task["output"], "w") as fh:
        json.dump(describe(mind_ir_pb2), fh, sort_keys=True)


def describe(module) -> dict:
    """``{message or enum: {field: [number, type, repeated, message/enum type]}}`` of a pb2 module."""
    out = {}

    def walk(desc, name):
        out[name] = {f.name: [f.number, f.type, _repeated(f),
                              (f.message_type or f.enum_type).full_name if (f.message_type or f.enum_type) else ""]
                     for f in desc.fields}
        for nested in desc.nested_types:
            walk(nested, f"{name}.{nested.name}")
        for enum in desc.enum_types:
            out[f"{name}.{enum.name}"] = {v.name: v.number for v in enum.values}

    for name, desc in module.DESCRIPTOR.message_types_by_name.items():
        walk(desc, name)
    for name, enum in module.DESCRIPTOR.enum_types_by_name.items():
        out[name] = {v.name: v.number for v in enum.values}
    return out


def _repeated(field) -> bool:
    # protobuf 5.x descriptors have ``label``; newer upb ones only ``is_repeated``.
    return field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED


TASKS = {"run": run_graph, "load": load_graph, "export_gpt": export_gpt, "schema": schema}


def main(tasks_path: str, report_path: str) -> None:
    with open(tasks_path) as fh:
        tasks = json.load(fh)
    report = {}
    for i, task in enumerate(tasks):
        try:
            TASKS[task["kind"]](task)
            report[str(i)] = "ok"
        except Exception as e:  # noqa: BLE001 - every failure is reported to the test, which names it
            report[str(i)] = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}"
    with open(report_path, "w") as fh:
        json.dump(report, fh)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
