"""napari's canvas (Mesa OpenGL) loads Mesa's libLLVM; importing triton afterwards loads a second
LLVM and the process segfaults. timm -> torchvision -> torch._dynamo imports triton when present.
The napari face calls ``avoid_triton_llvm_clash`` when it is imported (before the engine imports
torch): if an LLVM is already mapped into this process and triton is not yet imported, triton is
hidden (torch then runs without it: CPU inference and the CPU torch.compile backend do not need it).
"""

from __future__ import annotations

import sys


def avoid_triton_llvm_clash() -> bool:
    """Hide triton when an LLVM is mapped into this process; returns whether it was hidden."""
    if not sys.platform.startswith("linux") or "triton" in sys.modules:
        return False
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            if "libLLVM" in maps.read():
                sys.modules["triton"] = None  # type: ignore[assignment]
                return True
    except OSError:
        pass
    return False
