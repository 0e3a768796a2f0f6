"""Start-up cost: ``import distinfer`` loads only what every script uses; the rest on first use."""
from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("ml_dtypes", "onnx", "onnxruntime", "google.protobuf", "mpi4py", "safetensors", "tqdm", "threadpoolctl")


def _modules_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nimport json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_import_distinfer_leaves_the_heavy_packages_alone():
    loaded = _modules_after("import distinfer")
    assert not [m for m in HEAVY if m in loaded], sorted(m for m in HEAVY if m in loaded)


def test_lazy_names_arrive_on_first_use():
    loaded = _modules_after(
        "import numpy as np, distinfer as ms\n"
        "assert ms.bfloat16.np.name == 'bfloat16' and ms.Tensor(np.ones(2, ms.bfloat16.np)).dtype == ms.bfloat16\n"
        "assert callable(ms.load_checkpoint) and callable(ms.export) and callable(ms.parallel.transform_checkpoints)\n"
        "assert ms.nn.GraphCell.__name__ == 'GraphCell' and ms.dataset.GeneratorDataset\n"
        "assert {'load_checkpoint', 'dataset', 'export'} <= set(dir(ms))\n"
        "from distinfer import *\n"
        "assert unified_safetensors.__name__ == 'unified_safetensors'")
    assert {"ml_dtypes", "google.protobuf", "safetensors"} <= loaded
