"""The tensor-core plans without a GPU (CPU tests): configs fit the card, plans stay within their precision,
split-K chunks cover the reduction, and the runtime precompiles every tensor-core module."""
from __future__ import annotations

import itertools
import math

import pytest

from custom_impl.gpu import gemm_tc, runtime
from custom_impl.gpu.conv import conv_dims, implicit_gemm_tc

MAX_SMEM = 227 * 1024   # dynamic shared memory one block may opt into on sm_90


@pytest.mark.parametrize("cfg", gemm_tc.CONFIGS, ids=lambda c: c.name)
def test_configs_fit_an_sm90_block(cfg):
    assert cfg.threads in (128, 256) and cfg.bm % cfg.wm == 0 and cfg.bn % cfg.wn == 0
    assert cfg.wn % 16 == 0 and cfg.wm % 16 == 0 and cfg.bk % 16 == 0   # gemm_tc_tiles.cuh's static_asserts
    for ta, tb in itertools.product((False, True), repeat=2):
        assert cfg.smem_bytes(ta, tb) <= MAX_SMEM, (cfg.name, ta, tb)
    # every operand tile divides evenly into 4-float chunks per thread (TcMatrixLoader / TcGatherLoader)
    assert (cfg.bm * cfg.bk // 4) % cfg.threads == 0 and (cfg.bn * cfg.bk // 4) % cfg.threads == 0


def test_tile_floats_mirror_the_header_padding():
    # TF32 k-major rows BK + 4 (LD/4 odd for ldmatrix), BF16 BK + 8; mn-major TF32 BMN + 8, BF16 BMN + 4
    assert gemm_tc.tile_floats(128, 32, True, "tf32") == 128 * 36
    assert gemm_tc.tile_floats(128, 32, True, "bf16") == 128 * 40
    assert gemm_tc.tile_floats(128, 32, False, "tf32") == 32 * 136
    assert gemm_tc.tile_floats(128, 32, False, "bf16") == 32 * 132
    assert (36 // 4) % 2 == 1


@pytest.mark.parametrize("precision", gemm_tc.PRECISIONS)
@pytest.mark.parametrize("M,N,K", [(1, 1, 1), (64, 128, 784), (4096, 4096, 4096), (10, 1024, 8192), (7, 33, 5)])
def test_ranked_plans(M, N, K, precision):
    plans = gemm_tc.ranked_plans(M, N, K, precision, 132, runtime.GRAPH_LAUNCH_S)
    assert plans and all(cfg.precision == precision for cfg, _ in plans)
    for cfg, splits in plans:
        k_chunk, n = gemm_tc.split_chunk(K, splits, cfg.bk)
        assert k_chunk * n >= K and (n == 1 or k_chunk % cfg.bk == 0) and n <= splits
        assert splits == 1 or math.ceil(K / splits) >= 4 * cfg.bk
    cands = gemm_tc.tune_candidates(M, N, K, precision)
    assert any(s == 1 for _, s in cands) and len(set(cands)) == len(cands)


def test_conv_plans_and_workspace():
    dims = conv_dims((33, 17, 29, 31), (45, 17, 3, 3), 1, 1)
    with runtime.launch_cost_regime(runtime.GRAPH_LAUNCH_S):
        for precision in gemm_tc.PRECISIONS:
            plans = implicit_gemm_tc.plans(tuple(dims), precision, 132, runtime.launch_cost())
            assert set(plans) == {"forward", "backward_data", "backward_weights"}
            need = implicit_gemm_tc.workspace_size(dims, precision, 132)
            cfg, _, splits = plans["backward_weights"]
            assert splits > 1 and need >= splits * 45 * 17 * 9
    strided = conv_dims((3, 5, 11, 13), (7, 5, 3, 3), 2, 1)
    assert implicit_gemm_tc.plans(tuple(strided), "bf16", 132, 1e-6)["backward_data"][2] == 1   # phases, no split


def test_tensor_core_modules_are_precompiled():
    mods = runtime.kernel_modules()
    for family in ("gemm_tc", "conv_implicit_gemm_tc"):
        got = [d for f, d in mods if f == family]
        assert sorted(map(sorted, (d.items() for d in got))) == \
            sorted(map(sorted, (c.defines.items() for c in gemm_tc.CONFIGS))), family


@pytest.mark.parametrize("cfg", gemm_tc.WG_CONFIGS, ids=lambda c: c.name)
def test_wgmma_configs_fit_an_sm90_block(cfg):
    """gemm_wgmma.cu's static_asserts and limits: warpgroups of 64 rows, wgmma n of 128 or 256, >= 3 stages,
    the stages in the opt-in shared memory, whole 16-byte chunks per thread for both tiles, one 128-byte
    row of k per tile."""
    assert cfg.bm in (64, 128) and cfg.bn in (128, 256) and cfg.stages >= 3
    assert cfg.threads == cfg.bm // 64 * 128
    assert cfg.smem_bytes <= MAX_SMEM
    assert (cfg.bm * 8) % cfg.threads == 0 and (cfg.bn * 8) % cfg.threads == 0
    assert cfg.bk * gemm_tc.WG_ELEMENT_BYTES[cfg.precision] == 128
    assert cfg.blocks_per_sm * cfg.smem_bytes <= 228 * 1024


@pytest.mark.parametrize("K,splits", [(1, 1), (31, 1), (1001, 3), (4096, 1), (4097, 32), (64, 8)])
def test_wgmma_split_covers_the_padded_reduction(K, splits):
    for bk in (32, 64):
        kp, chunk, n = gemm_tc.wg_split(K, splits, bk)
        assert kp % bk == 0 and K <= kp < K + bk
        assert chunk % bk == 0 and n <= splits and (n - 1) * chunk < kp <= n * chunk   # no chunk is empty


@pytest.mark.parametrize("M,N,K", [(4096, 4096, 4096), (64, 10, 784), (1, 1, 1), (257, 129, 4097)])
@pytest.mark.parametrize("precision", gemm_tc.PRECISIONS)
def test_wgmma_workspace_holds_its_buffers(M, N, K, precision):
    """wg_buffers' A', B' and partials lie inside wg_workspace_size, B' and the partials 16-byte aligned
    relative to an aligned workspace."""
    class _Buf:   # a stand-in device buffer at a 256-byte-aligned address
        class data:
            ptr = 1 << 20

    for cfg, splits in gemm_tc.wg_ranked_plans(M, N, K, precision)[:4]:
        kp, _, n = gemm_tc.wg_split(K, splits, cfg.bk)
        size = gemm_tc.wg_workspace_size(M, N, K, (cfg, n))
        a, b, partials = gemm_tc.wg_buffers(_Buf, M, N, kp, precision)
        eb = gemm_tc.WG_ELEMENT_BYTES[precision]
        assert b - a == M * kp * eb and (b - a) % 128 == 0
        assert partials - a >= (M + N) * kp * eb and partials % 4 == 0
        end = partials + (n * M * N * 4 if n > 1 else 0)
        assert end - a <= size * 4


@pytest.mark.parametrize("geom", [((2, 3, 11, 13), (7, 3, 3, 3), (1, 1), (1, 1)),
                                  ((64, 3, 224, 224), (64, 3, 7, 7), (2, 2), (3, 3)),
                                  ((33, 17, 29, 31), (45, 17, 3, 3), (1, 1), (1, 1))])
def test_rounded_copies_fit_the_workspace(geom):
    """The "rounded" candidate's copies of x, dy and W start 256-byte aligned, do not overlap, hold their
    tensors, and leave the FP32 algorithms their whole workspace; a tf32 / bf16 layer's workspace covers it."""
    from custom_impl.gpu import conv
    from custom_impl.gpu.conv import select

    x_shape, w_shape, stride, padding = geom
    dims = conv_dims(x_shape, w_shape, stride, padding)
    N, C, H, W, K, R, S, P, Q = dims[:9]
    off = conv._rounded_offsets(dims)
    sizes = {"x": N * C * H * W, "dy": N * K * P * Q, "W": K * C * R * S}
    spans = sorted((off[name], off[name] + size) for name, size in sizes.items())
    assert all(start % 64 == 0 for start, _ in spans) and off["rest"] % 64 == 0
    assert spans[0][0] == 0 and all(a[1] <= b[0] for a, b in zip(spans, spans[1:])) and spans[-1][1] <= off["rest"]
    need = conv.rounded_workspace_size(dims)
    assert need == off["rest"] + select.workspace_size(dims, 132)
    for precision in gemm_tc.PRECISIONS:
        assert conv.conv2d_workspace_size(x_shape, w_shape, stride, padding, precision) >= need


def test_rounded_copies_past_the_cap_leave_the_tensor_cores_alone():
    """VGG-16's first 3x3 layer at batch 64 needs 2 x 205M floats of copies: past ROUNDED_MAX_COPIES, so no
    "rounded" candidate and no workspace for one."""
    from custom_impl.gpu import conv

    dims = conv_dims((64, 64, 224, 224), (64, 64, 3, 3), (1, 1), (1, 1))
    assert conv._rounded_offsets(dims) is None and conv.rounded_workspace_size(dims) == 0
    assert conv._rounded("forward", "tf32", dims, {}, None, None, 132) == {}
