"""The wgmma convolution (custom_impl/gpu/conv/wgmma.py) without a GPU: the NumPy replay of its kernels'
index math (lab/conv/wgmma_emulate.py: conv_wgmma_prep's operand modes, the NCHW epilogue) composes every
phase into the float64 convolution, and its plans and workspace fit the kernel's limits. The replay is
exact arithmetic on the same index math, so its tolerance is float64 rounding (1e-12 relative).
"""
from __future__ import annotations

import importlib.util
import os

import pytest

from custom_impl.gpu import gemm_tc
from custom_impl.gpu.conv import conv_dims, wgmma

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
GEOMETRIES = [  # (N, C, H, W, K, R, S, stride, padding), as test_conv_tc.py
    (2, 3, 11, 13, 7, 3, 3, (1, 1), (1, 1)),
    (3, 5, 11, 13, 7, 3, 3, (2, 2), (1, 1)),
    (2, 1, 28, 28, 6, 5, 5, (1, 1), (2, 2)),
    (1, 4, 9, 10, 5, 2, 2, (3, 3), (0, 0)),      # stride > kernel: pixels no tap reaches (dx there is 0)
    (2, 6, 12, 9, 9, 3, 1, (2, 1), (1, 0)),      # rectangular kernel and stride
    (3, 2, 7, 30, 4, 5, 20, (2, 2), (2, 9)),     # a speech-network kernel, wide and strided
    (2, 8, 6, 6, 3, 1, 1, (2, 2), (0, 0)),       # strided 1x1
]


def _emulator():
    spec = importlib.util.spec_from_file_location("wgmma_emulate", os.path.join(ROOT, "lab", "conv", "wgmma_emulate.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("rows_per_block", [64, 7])
@pytest.mark.parametrize("geom", GEOMETRIES, ids=lambda g: "x".join(str(v) for v in g[:7]) + f"_s{g[7][0]}{g[7][1]}")
def test_replay_matches_float64(geom, rows_per_block):
    """7 rows per block starts blocks in the middle of every carry (a row of q, an image, a kernel row)."""
    assert _emulator().check(geom, rows_per_block=rows_per_block) < 1e-12


def test_prep_grid_stays_within_cuda_limits():
    for rows in (1, 64, 65535 * 64, 65535 * 64 + 1, 10 ** 8):
        per_block = wgmma.prep_rows_per_block(rows)
        assert per_block >= 64 and -(-rows // per_block) <= 65535, rows


def test_plans_fit_the_kernel():
    """NCHW outputs (forward, backward-data) never split (the partials are row-major); the workspace covers
    every phase's prepared operands and partials."""
    for geom in GEOMETRIES + [(128, 256, 14, 14, 256, 3, 3, (1, 1), (1, 1)), (16, 64, 56, 56, 64, 3, 3, (1, 1), (1, 1))]:
        N, C, H, W, K, R, S, stride, padding = geom
        dims = conv_dims((N, C, H, W), (K, C, R, S), stride, padding)
        for precision in gemm_tc.PRECISIONS:
            total = wgmma.workspace_size(dims, precision)
            for phase in wgmma.PHASES:
                M, Ncols, red, _, _, pq = wgmma.gemm_shape(dims, phase)
                cfg, splits = wgmma.plan(tuple(dims), phase, precision, 132, 0.0)
                assert isinstance(cfg, gemm_tc.WgConfig) and cfg.precision == precision
                assert pq == 1 or splits == 1, (geom, phase, splits)
                need = gemm_tc.wg_workspace_size(M, Ncols, red, (cfg, gemm_tc.wg_split(red, splits, cfg.bk)[2]))
                assert need <= total, (geom, phase, precision)


def test_bad_phase_names_the_choices():
    dims = conv_dims((1, 1, 5, 5), (1, 1, 3, 3), 1, 1)
    with pytest.raises(ValueError, match="backward_weights"):
        wgmma.gemm_shape(dims, "backwards")
