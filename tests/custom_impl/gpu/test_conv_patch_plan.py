"""The "patch" conv algorithm (multi-tap stride-1 backward passes, custom_impl/gpu/conv/patch.py) without a
GPU: its launch plans stay within the kernels' limits, select.py offers it as a candidate only where meant and
the workspace is sized for it, and the NumPy replay of kernels/conv_patch.cu (lab/conv/patch_emulate.py,
through the real wrappers behind a stand-in CuPy) matches float64 on small shapes. The replay is exact
arithmetic on the same index math, so its tolerance is float64 rounding (1e-12 relative), not the float32
bound of the GPU tests.
"""
from __future__ import annotations

import importlib.util
import os
import sys

import pytest

from custom_impl.gpu import gemm, runtime
from custom_impl.gpu.conv import conv2d_workspace_size, conv_dims, select
from custom_impl.gpu.conv import patch as conv_patch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

SHAPES = [  # (x_shape, w_shape, padding)
    ((256, 32, 14, 14), (64, 32, 5, 5), 2),   # LeNet conv2
    ((1024, 32, 12, 12), (64, 32, 5, 5), 0),
    ((1, 32, 14, 14), (64, 32, 5, 5), 2),
    ((64, 256, 14, 14), (256, 256, 3, 3), 1),
    ((8, 64, 56, 56), (64, 64, 3, 3), 1),
    ((3, 9, 13, 11), (70, 9, 5, 5), 2),
    ((2, 33, 5, 5), (3, 33, 2, 7), (1, 3)),
    ((2, 8, 9, 80), (4, 8, 7, 7), 3),
]


@pytest.mark.parametrize("x_shape,w_shape,padding", SHAPES)
def test_patch_plans_stay_within_the_kernels_limits(x_shape, w_shape, padding):
    dims = conv_dims(x_shape, w_shape, 1, padding)
    N, C, H, Wd, K, R, S, P, Q = dims[:9]
    candidates = conv_patch.weights_candidates(dims, 132)
    assert (conv_patch.weights_plan(dims, 132) is None) == (candidates == [])
    assert candidates == [] or candidates[0] == conv_patch.weights_plan(dims, 132)   # the default first
    for wp in candidates:
        # PT_WT_THREADS = 320 / PT_T: the kernel's __launch_bounds__
        # the default plans stage two stages in 48 KB; the tall-item candidates opt into up to SMEM_MAX
        assert wp.smem <= conv_patch.SMEM_MAX and wp.threads <= conv_patch.WT_THREADS // wp.t
        assert wp.smem <= conv_patch.SMEM_BYTES or wp.pb > candidates[0].pb
        assert wp.threads % 32 == 0 and wp.threads // 8 * wp.t >= wp.cb * R   # every (c, r) task has a thread
        assert wp.cb * R <= conv_patch.WT_TASKS and wp.ldq % 8 == 4 and wp.ldx % 8 == 4
        assert wp.t in conv_patch.T_CHOICES and (wp.t == 1 or S <= conv_patch.T2_MAX_S[wp.kb])
        assert wp.ldq >= Q and wp.ldx >= -(-Q // 4) * 4 + conv_patch.window(S) - 4
        items = N * -(-P // wp.pb)
        splits = wp.grid[0]
        assert (splits - 1) * wp.chunk < items <= splits * wp.chunk  # every item in one split, none empty
        assert wp.kb in conv_patch.KB_CHOICES and wp.grid[1] * wp.cb >= C and wp.grid[2] * wp.kb >= K
        assert (splits - 1) * wp.grid[1] * wp.grid[2] < conv_patch.blocks_per_sm(wp.kb, wp.t) * 132  # one wave
        # the workspace holds the partial dW of every candidate the tuning may time
        assert splits == 1 or conv_patch.workspace_size(x_shape, w_shape, 1, padding, 132) >= splits * K * C * R * S
    dp = conv_patch.data_plan(dims)
    if dp is not None:
        assert dp.smem <= conv_patch.SMEM_BYTES and dp.threads <= conv_patch.DX_THREADS
        assert dp.wch * 4 >= Wd and dp.ldd % 8 == 4 and dp.ldd >= (dp.wch - 1) * 4 + conv_patch.window(S)
        assert dp.grid[:2] == (N * -(-H // dp.hb), -(-C // (8 << dp.ct_shift)))
        splits = dp.grid[2]
        assert dp.kz % dp.kc == 0 and (splits - 1) * dp.kz < K <= splits * dp.kz  # every k in one split
        assert splits == 1 or dp.kz >= 2 * dp.kc                                   # each split double-buffers
        assert splits * dp.grid[0] * dp.grid[1] <= 2 * 132 or splits == 1          # within one wave
    need = conv2d_workspace_size(x_shape, w_shape, 1, padding)
    assert need >= conv_patch.workspace_size(x_shape, w_shape, 1, padding, 132)


def test_patch_candidacy():
    lenet = conv_dims((256, 32, 14, 14), (64, 32, 5, 5), 1, 2)
    assert select.patch_ok(lenet, "backward_weights") and select.patch_ok(lenet, "backward_data")
    assert not select.patch_ok(conv_dims((256, 32, 14, 14), (64, 32, 5, 5), 2, 2), "backward_data")   # stride 2
    assert not select.patch_ok(conv_dims((64, 256, 56, 56), (64, 256, 1, 1), 1, 0), "backward_weights")  # 1x1
    assert not select.patch_ok(conv_dims((256, 3, 32, 32), (32, 3, 5, 5), 1, 2), "backward_data")     # C < 8
    assert not select.patch_ok(conv_dims((8, 16, 20, 20), (16, 16, 9, 9), 1, 4), "backward_weights")  # S > 7
    assert conv_patch.weights_plan(conv_dims((8, 16, 20, 20), (16, 16, 9, 9), 1, 4)) is None
    with pytest.raises(ValueError, match="stride"):
        conv_patch.backward_weights(None, None, None, conv_dims((2, 8, 9, 9), (4, 8, 3, 3), 2, 1))


@pytest.fixture
def emulator(monkeypatch):
    """lab/conv/patch_emulate.py with its stand-in CuPy and kernels installed for this test only (the
    emulator's ``check`` swaps the runtime's sm_count itself and restores it)."""
    spec = importlib.util.spec_from_file_location("patch_emulate", os.path.join(ROOT, "lab", "conv",
                                                                                "patch_emulate.py"))
    emu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(emu)
    monkeypatch.setitem(sys.modules, "cupy", emu.fake_cupy())
    monkeypatch.setattr(conv_patch, "kernel", emu.kernel)
    monkeypatch.setattr(gemm, "splitk_reduce", emu.gemm_splitk_reduce)
    monkeypatch.setattr(runtime, "sm_count", runtime.sm_count)   # restored even if a check fails midway
    monkeypatch.setattr(runtime, "AUTOTUNE", False)   # nothing is timed on the stand-in: default plans
    yield emu


@pytest.mark.parametrize("case,dx_splits", [((2, 3, 9, 11, 5, 3, 3, (1, 1)), 1),
                                             ((1, 9, 7, 6, 70, 5, 5, (2, 2)), 3),   # k range split, ragged
                                             ((3, 4, 10, 8, 7, 3, 5, (0, 2)), 1)])
def test_patch_kernels_replayed_on_the_cpu(emulator, case, dx_splits):
    worst, _, data_plan = emulator.check(case)
    assert data_plan.grid[2] == dx_splits  # on 132 SMs; check() also replays 1 SM, where nothing splits
    assert worst < 1e-12
