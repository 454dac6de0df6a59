"""ActionFormer's NMS (libs/utils/nms.py and its C++ op, csrc/nms_cpu.cpp) from a checkout outside tal.

Nothing of it is kept in tal: `load_actionformer_nms(checkout, build_dir)` compiles the op with
torch's extension builder into `build_dir` (as the checkout's setup.py does: one C++ file, -fopenmp;
about a minute the first time, then cached) and imports the checkout's `libs/utils/nms.py`, whose
`batched_nms` is what ActionFormer's evaluation calls. Get one with
`git clone https://github.com/happyharrycn/actionformer_release /tmp/official/actionformer_release`.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def load_actionformer_nms(checkout: Path, build_dir: Path):
    """-> the checkout's nms module (batched_nms, with the compiled nms_1d_cpu behind it)."""
    from torch.utils.cpp_extension import load

    source = checkout / "libs" / "utils" / "csrc" / "nms_cpu.cpp"
    wrapper = checkout / "libs" / "utils" / "nms.py"
    for path in (source, wrapper):
        if not path.is_file():
            raise SystemExit(f"{path} not found: --actionformer must be an actionformer_release checkout")
    build_dir.mkdir(parents=True, exist_ok=True)
    sys.modules["nms_1d_cpu"] = load(name="nms_1d_cpu", sources=[str(source)], extra_cflags=["-fopenmp"],
                                     build_directory=str(build_dir), verbose=False)
    spec = importlib.util.spec_from_file_location("actionformer_nms", wrapper)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
