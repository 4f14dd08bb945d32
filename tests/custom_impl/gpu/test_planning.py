"""The GPU kernels' launch planning, which is plain Python and runs without a GPU (no ``gpu`` marker):
tile / split-K choice under eager and graph launch costs, the workspace that has to cover every kernel
a layer may pick, and the candidates each phase may pick from.

Figures asserted here are properties of the cost model and the kernels' limits, not timings: e.g. that
eager calls, whose launches cost ~20 us of host time each, never split a GEMM whose whole GPU time is
below that, while inside a CUDA graph (~1 us per launch) the same GEMM splits.
"""
from __future__ import annotations

import pytest

from custom_impl.gpu import conv, conv_smallc, gemm, winograd


def test_launch_cost_context_restores_and_changes_plans():
    before = gemm._LAUNCH_S
    # (64, 10, 128) with a separate reduce launch (conv's split-K): measured on the H100 (dev/overhead.py,
    # session 4) 20.9 us eagerly unsplit vs 34.0 split in two; in a graph 20.0 unsplit vs 12.1 split in two
    eager = gemm.choose_config(64, 10, 128)
    with gemm.launch_cost(gemm.GRAPH_LAUNCH_S):
        graphed = gemm.choose_config(64, 10, 128)
        with pytest.raises(RuntimeError):
            with gemm.launch_cost(5e-6):
                assert gemm._LAUNCH_S == 5e-6
                raise RuntimeError("inside")
        assert gemm._LAUNCH_S == gemm.GRAPH_LAUNCH_S
    assert gemm._LAUNCH_S == before
    assert graphed[1] > eager[1] >= 1


def test_conv_plans_are_memoised_per_launch_cost_regime():
    """conv's memoised plans are the plans computed afresh, in either launch-cost regime (LeNet's conv2 at
    batch 16 splits differently eagerly and in a graph), and a list stride or padding is planned the same."""
    shapes = ((16, 32, 14, 14), (64, 32, 5, 5), (1, 1), (2, 2))
    for plan in (conv._weights_plan, conv._forward_plan):
        eager = plan(*shapes)
        with gemm.launch_cost(gemm.GRAPH_LAUNCH_S):
            graph = plan(*shapes)
            assert graph == plan.__wrapped__(*shapes)
        assert eager == plan.__wrapped__(*shapes) == plan(shapes[0], shapes[1], [1, 1], [2, 2])
        assert graph != eager
    with pytest.raises(ValueError, match="does not fit"):
        conv._dims((1, 1, 2, 2), (1, 1, 5, 5), 1, 0)


@pytest.mark.parametrize("M,N,K", [(64, 10, 128), (8192, 10, 128), (33, 16, 64)])
def test_eager_calls_do_not_split_gemms_shorter_than_a_launch(M, N, K):
    """Eagerly a split costs a second ~20 us host launch; these GEMMs run in < 20 us unsplit."""
    cfg, splits = gemm.choose_config(M, N, K, launch_s=20e-6)
    assert splits == 1
    assert gemm.estimate_seconds(cfg, M, N, K, 1, launch_s=20e-6) == pytest.approx(20e-6)


@pytest.mark.parametrize("M,N,K", [(64, 10, 128), (64, 128, 784), (33, 1000, 513), (1024, 10, 1024),
                                   (1024, 1024, 1024), (4096, 4096, 4096), (1024, 128, 3136)])
def test_gemm_plans_weigh_serial_against_a_reduce_launch(M, N, K):
    """gemm plans with reduce="auto": every (config, splits) costed with the partials summed in the same
    launch (serial: no second launch, a tail of L2 round trips in one block per tile) and with a second
    reduce launch; the plan is the cheapest of all. Eagerly (~20 us of host time per launch) small split
    GEMMs go serial; in a graph (~1 us per launch) the separate reduce wins where the tail is longer."""
    for launch_s in (20e-6, gemm.GRAPH_LAUNCH_S):
        cfg, splits, serial = gemm.choose_config(M, N, K, launch_s=launch_s, reduce="auto")
        assert splits > 1 or not serial
        best = min(gemm.estimate_seconds(c, M, N, K, s, launch_s=launch_s, reduce=mode)
                   for c in gemm.CONFIGS for s in (1, 2, 4, 8, 16, 32) if s == 1 or K // s >= 64
                   for mode in ("launch", "serial"))
        got = gemm.estimate_seconds(cfg, M, N, K, splits, launch_s=launch_s, reduce="serial" if serial else "launch")
        assert got == pytest.approx(best)
    with pytest.raises(ValueError, match="reduce"):
        gemm.choose_config(M, N, K, reduce="atomic")


def test_small_eager_split_gemms_sum_in_one_launch():
    """(64, 128, 784) splits 8 ways either way; eagerly the reduce launch would cost ~20 us of host time,
    more than the serial tail (~2 L2 round trips of ~0.5 us per pass), so it goes serial."""
    cfg, splits, serial = gemm.choose_config(64, 128, 784, launch_s=20e-6, reduce="auto")
    assert splits >= 4 and serial
    tail = gemm._serial_tail_seconds(cfg, 128, splits)
    assert gemm._FENCE_S < tail < 20e-6


def test_big_gemm_takes_a_bk16_tile_and_no_split():
    cfg, splits = gemm.choose_config(4096, 4096, 4096)
    assert (cfg.bk, splits) == (16, 1)
    assert cfg.smem_bytes == 2 * 16 * (cfg.bm + cfg.bn + 2 * gemm.TILE_PAD) * 4
    assert cfg.name in gemm.CONFIG_BY_NAME


def test_conv_configs_stay_8_wide_in_k():
    """The 16-deep k tiles measured 0.3-0.8x of the 8-deep ones inside the conv loaders (H100, run 4)."""
    assert all(c.bk == 8 for c in conv.CONV_CONFIGS)


@pytest.mark.parametrize("N,K,PQ", [(256, 32, 784), (64, 64, 12544), (1, 32, 784), (1024, 64, 196), (600, 7, 49),
                                    (5, 2, 1)])
def test_bias_splits_cover_every_image_once(N, K, PQ):
    nchunk, splits = conv._bias_splits(N, K, PQ)
    assert nchunk >= 1 and splits >= 1
    assert (splits - 1) * nchunk < N <= splits * nchunk  # every image in exactly one chunk, none empty
    if splits > 1:
        assert nchunk * PQ >= 4096  # each block still sums a useful amount


def test_backward_data_splits_only_stride_1_and_only_small_batches():
    with gemm.launch_cost(gemm.GRAPH_LAUNCH_S):
        small = conv._data_plan(conv._dims((1, 32, 14, 14), (64, 32, 5, 5), 1, 2))
        strided = conv._data_plan(conv._dims((1, 32, 14, 14), (64, 32, 5, 5), 2, 2))
        big = conv._data_plan(conv._dims((256, 64, 56, 56), (64, 64, 3, 3), 1, 1))
    assert small[2] > 1 and small[1] % small[0].bk == 0
    assert strided[2] == 1
    assert big[2] == 1


@pytest.mark.parametrize("x_shape,w_shape,stride,padding", [
    ((1, 32, 14, 14), (64, 32, 5, 5), 1, 2),      # small batch: forward / backward-data split-K
    ((64, 3, 224, 224), (64, 3, 7, 7), 2, 3),     # few channels: conv_smallc backward-weights partials
    ((64, 256, 28, 28), (256, 256, 3, 3), 1, 1),  # Winograd candidate
    ((33, 17, 29, 31), (45, 17, 3, 3), 1, 1),
])
def test_workspace_covers_every_candidate(x_shape, w_shape, stride, padding):
    for cost in (20e-6, gemm.GRAPH_LAUNCH_S):
        with gemm.launch_cost(cost):
            need = conv.conv2d_workspace_size(x_shape, w_shape, stride, padding)
            dims = conv._dims(x_shape, w_shape, stride, padding)
            N, C, H, W, K, R, S, P, Q = dims[:9]
            _, _, f_splits = conv._forward_plan(x_shape, w_shape, stride, padding)
            _, _, w_splits = conv._weights_plan(x_shape, w_shape, stride, padding)
            _, _, d_splits = conv._data_plan(dims)
            assert need >= (f_splits > 1) * f_splits * K * N * P * Q
            assert need >= (w_splits > 1) * w_splits * K * C * R * S
            assert need >= (d_splits > 1) * d_splits * N * C * H * W
            assert need >= K * conv._bias_splits(N, K, P * Q)[1]
            if conv_smallc.weights_plan(dims, 132) is not None:
                assert need >= conv_smallc.workspace_size(x_shape, w_shape, stride, padding, 132)
            for phase in ("forward", "backward_data", "backward_weights"):
                if conv.winograd_ok(x_shape, w_shape, stride, padding, phase):
                    assert need >= winograd.workspace_size(x_shape, w_shape, stride, padding, phase)


def test_winograd_candidates():
    assert conv.winograd_ok((64, 256, 28, 28), (256, 256, 3, 3), 1, 1, "forward")
    assert conv.winograd_ok((256, 64, 56, 56), (64, 64, 3, 3), 1, 1, "backward_data")
    assert conv.winograd_ok((64, 256, 28, 28), (256, 256, 3, 3), 1, 1, "backward_weights")
    assert not conv.winograd_ok((256, 3, 32, 32), (32, 3, 3, 3), 1, 1, "forward")          # < 16 channels
    assert not conv.winograd_ok((64, 128, 28, 28), (256, 128, 3, 3), 2, 1, "forward")      # stride 2
    assert not conv.winograd_ok((256, 32, 14, 14), (64, 32, 5, 5), 1, 2, "forward")        # 5x5
    assert not conv.winograd_ok((8192, 32, 16, 16), (64, 32, 3, 3), 1, 1, "forward")       # > 2 GB workspace


def test_kernel_choice_is_looked_up_before_any_planning(monkeypatch):
    """A repeated eager call pays one dict lookup: the candidates (eligibility checks, partials) are only
    built on a cache miss, and a shape with one candidate is cached without timing (no GPU needed)."""
    monkeypatch.setattr(conv, "_choices", {})
    built = []

    def candidates():
        built.append(1)
        return {"v3": lambda: None}

    assert conv._timed_choice(("data", 0, (1,)), candidates, "v3") == "v3"
    assert conv._timed_choice(("data", 0, (1,)), candidates, "v3") == "v3"
    assert len(built) == 1
    conv._choices[("data", 0, (2,))] = "winograd"
    assert conv._timed_choice(("data", 0, (2,)), lambda: pytest.fail("built on a hit"), "v3") == "winograd"


@pytest.mark.parametrize("K,C,Tp", [(256, 256, 12544), (128, 128, 8192), (45, 17, 7920), (16, 16, 16), (64, 3, 65536)])
def test_winograd_weights_plan(K, C, Tp):
    """The weight-gradient GEMMs' plan: a chooser config, splits within 1..MAX_WEIGHT_SPLITS whose t ranges
    are multiples of the tile's BK (all but the last) and cover Tp exactly, each at least MIN_WEIGHT_CHUNK
    long when split."""
    cfg, chunk, splits = winograd.weights_plan(K, C, Tp)
    assert cfg in winograd.CANDIDATES and 1 <= splits <= winograd.MAX_WEIGHT_SPLITS
    if splits > 1:
        assert chunk % cfg.bk == 0 and chunk >= winograd.MIN_WEIGHT_CHUNK - cfg.bk
        assert (splits - 1) * chunk < Tp <= splits * chunk
    else:
        assert chunk >= Tp


def test_winograd_weights_workspace_parts():
    """V (16 C Tp) + Y (16 K Tp) + the split partials (splits 16 K C), each part a multiple of 4 floats."""
    x_shape, w_shape = (33, 17, 29, 31), (45, 17, 3, 3)
    Tp = -(-33 * 15 * 16 // 4) * 4
    _, _, splits = winograd.weights_plan(45, 17, Tp)
    n = winograd.workspace_size(x_shape, w_shape, 1, 1, "backward_weights", 132)
    assert n == 16 * 17 * Tp + 16 * 45 * Tp + -(-splits * 16 * 45 * 17 // 4) * 4
    with pytest.raises(ValueError, match="phase"):
        winograd.workspace_size(x_shape, w_shape, 1, 1, "weights")


@pytest.mark.parametrize("x_shape,w_shape,stride,padding,forward,data,weights", [
    # LeNet conv1: few channels -> conv_smallc's forward / backward kernels join v2 / v3
    ((256, 1, 28, 28), (32, 1, 5, 5), 1, 2, {"v2", "smallc"}, {"v3", "v5"}, {"v2", "smallc"}),
    # LeNet conv2: 5x5, 32 channels -> conv_patch for both backward passes
    ((256, 32, 14, 14), (64, 32, 5, 5), 1, 2, {"v2"}, {"v3", "patch"}, {"v2", "patch"}),
    # 3x3, 256 channels -> Winograd in all three phases, conv_patch in the backward ones
    ((64, 256, 28, 28), (256, 256, 3, 3), 1, 1, {"v2", "winograd"}, {"v3", "winograd", "patch"},
     {"v2", "winograd", "patch"}),
    # stride 2: neither Winograd nor conv_patch
    ((64, 128, 28, 28), (256, 128, 3, 3), 2, 1, {"v2"}, {"v3"}, {"v2"}),
])
def test_timed_candidates(monkeypatch, x_shape, w_shape, stride, padding, forward, data, weights):
    """Which kernels each phase's timed choice weighs for a layer: the eligibility rules (plain Python)
    behind choose_forward / choose_backward_data / choose_backward_weights, with the timing replaced by
    returning the candidates' names (no GPU needed; the arrays are never touched)."""
    seen = {}

    def fake_choice(key, candidates, default):
        seen[key[0]] = set(candidates())
        return default

    monkeypatch.setattr(conv, "_timed_choice", fake_choice)
    monkeypatch.setattr(conv, "_device_id", lambda: 0)
    dims = conv._dims(x_shape, w_shape, stride, padding)
    conv.choose_forward(None, None, None, None, dims)
    conv.choose_backward_data(None, None, None, dims, 132)
    conv.choose_backward_weights(None, None, None, dims, None, 132)
    assert seen == {"forward": forward, "data": data, "weights": weights}
