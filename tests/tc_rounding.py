"""Host references of the tensor cores' operand rounding, shared by the GPU tests of the TF32 / BF16 kernels."""
from __future__ import annotations

import numpy as np


def round_tf32(x: np.ndarray) -> np.ndarray:
    """float32 -> TF32 (10 mantissa bits), nearest, ties away from zero (PTX cvt.rna.tf32.f32)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x1000) & 0xFFFFE000).astype(np.uint32).view(np.float32)


def round_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> BF16 (7 mantissa bits), nearest even (PTX cvt.rn.bf16x2.f32)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return u.astype(np.uint32).view(np.float32)


ROUND = {"tf32": round_tf32, "bf16": round_bf16}
