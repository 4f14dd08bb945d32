"""The GPU kernels' launch planning, which is plain Python and runs without a GPU (no ``gpu`` marker):
tile / split-K choice under eager and graph launch costs, the workspace that has to cover every kernel
a layer may pick, and the candidates each phase may pick from.

Figures asserted here are properties of the cost model and the kernels' limits, not timings: e.g. that
eager calls, whose first launch costs ~20 us of host time and a second ~10 us more, never split a GEMM
whose whole GPU time is below that, while inside a CUDA graph (~1 us per launch) the same GEMM splits.
"""
from __future__ import annotations

import os
import shutil

import pytest

from custom_impl.gpu import runtime, tiles
from custom_impl.gpu.conv import conv2d_workspace_size, conv_dims, few_channels, implicit_gemm, select, winograd


def test_launch_cost_context_restores_and_changes_plans():
    before = runtime.launch_cost()
    # (64, 10, 128) with a separate reduce launch (conv's split-K): measured on the H100 (lab/gemm's
    # overhead probe) 20.9 us eagerly unsplit vs 34.0 split in two; in a graph 20.0 unsplit vs 12.1 split in two
    eager = tiles.choose_config(64, 10, 128)
    with runtime.launch_cost_regime(runtime.GRAPH_LAUNCH_S):
        graphed = tiles.choose_config(64, 10, 128)
        with pytest.raises(RuntimeError):
            with runtime.launch_cost_regime(5e-6):
                assert runtime.launch_cost() == 5e-6
                raise RuntimeError("inside")
        assert runtime.launch_cost() == runtime.GRAPH_LAUNCH_S
    assert runtime.launch_cost() == before
    assert graphed[1] > eager[1] >= 1


def test_conv_plans_are_memoised_per_launch_cost_regime():
    """conv's memoised plans are the plans computed afresh, in either launch-cost regime (LeNet's conv2 at
    batch 16 splits differently eagerly and in a graph), and a list stride or padding is planned the same."""
    dims = conv_dims((16, 32, 14, 14), (64, 32, 5, 5), (1, 1), (2, 2))
    for plan in (implicit_gemm.weights_plan, implicit_gemm.forward_plan):
        eager = plan(dims)
        with runtime.launch_cost_regime(runtime.GRAPH_LAUNCH_S):
            graph = plan(dims)
            assert graph == plan.__wrapped__(dims)
        assert eager == plan.__wrapped__(dims) == plan(conv_dims((16, 32, 14, 14), (64, 32, 5, 5), [1, 1], [2, 2]))
        assert graph != eager
    with pytest.raises(ValueError, match="does not fit"):
        conv_dims((1, 1, 2, 2), (1, 1, 5, 5), 1, 0)


def test_conv_dims_is_a_memoised_named_tuple():
    dims = conv_dims((7, 3, 13, 17), (5, 3, 3, 5), (2, 1), (1, 2))
    assert dims == (7, 3, 13, 17, 5, 3, 5, 7, 17, 2, 1, 1, 2)
    assert (dims.P, dims.Q, dims.sh, dims.pw) == (7, 17, 2, 2)
    assert conv_dims((7, 3, 13, 17), (5, 3, 3, 5), (2, 1), (1, 2)) is dims
    assert conv_dims([7, 3, 13, 17], [5, 3, 3, 5], [2, 1], [1, 2]) == dims   # lists: computed, not cached


@pytest.mark.parametrize("M,N,K", [(64, 10, 128), (8192, 10, 128), (33, 16, 64)])
def test_eager_calls_do_not_split_gemms_shorter_than_a_launch(M, N, K):
    """Eagerly a split costs a second launch (~10 us more host time than the call's ~20 us); these GEMMs run
    in < 20 us unsplit."""
    cfg, splits = tiles.choose_config(M, N, K, launch_s=20e-6)
    assert splits == 1
    assert tiles.estimate_seconds(cfg, M, N, K, 1, launch_s=20e-6) == pytest.approx(20e-6)


@pytest.mark.parametrize("M,N,K", [(64, 10, 128), (64, 128, 784), (33, 1000, 513), (1024, 10, 1024),
                                   (1024, 1024, 1024), (4096, 4096, 4096), (1024, 128, 3136)])
def test_gemm_plans_weigh_serial_against_a_reduce_launch(M, N, K):
    """gemm plans with reduce="auto": every (config, splits) costed with the partials summed in the same
    launch (serial: no second launch, a tail of L2 round trips in one block per tile) and with a second
    reduce launch; the plan is the cheapest of all. Eagerly (~20 us of host time for the call, ~10 us for a
    second launch) small split GEMMs go serial; in a graph (~1 us per launch) the separate reduce wins where the tail is longer."""
    for launch_s in (20e-6, runtime.GRAPH_LAUNCH_S):
        cfg, splits, serial = tiles.choose_config(M, N, K, launch_s=launch_s, reduce="auto")
        assert splits > 1 or not serial
        best = min(tiles.estimate_seconds(c, M, N, K, s, launch_s=launch_s, reduce=mode)
                   for c in tiles.CONFIGS for s in (1, 2, 4, 8, 16, 32) if s == 1 or K // s >= 64
                   for mode in ("launch", "serial"))
        got = tiles.estimate_seconds(cfg, M, N, K, splits, launch_s=launch_s, reduce="serial" if serial else "launch")
        assert got == pytest.approx(best)
    with pytest.raises(ValueError, match="reduce"):
        tiles.choose_config(M, N, K, reduce="atomic")


def test_small_eager_split_gemms_sum_in_one_launch():
    """(64, 128, 784) splits 8 ways either way; eagerly the reduce launch would cost ~10 us more host time,
    more than the serial tail (~2 L2 round trips of ~0.5 us per pass), so it goes serial."""
    cfg, splits, serial = tiles.choose_config(64, 128, 784, launch_s=20e-6, reduce="auto")
    assert splits >= 4 and serial
    tail = tiles.serial_tail_seconds(cfg, 128, splits)
    assert tiles.FENCE_S < tail < runtime.EAGER_EXTRA_LAUNCH_S


def test_big_gemm_takes_a_bk16_tile_and_no_split():
    cfg, splits = tiles.choose_config(4096, 4096, 4096)
    assert (cfg.bk, splits) == (16, 1)
    assert cfg.smem_bytes == 2 * 16 * (cfg.bm + cfg.bn + 2 * tiles.TILE_PAD) * 4
    assert cfg.name in tiles.CONFIG_BY_NAME


def test_conv_configs_stay_8_wide_in_k():
    """The 16-deep k tiles measured 0.3-0.8x of the 8-deep ones inside the conv loaders (H100)."""
    assert all(c.bk == 8 for c in implicit_gemm.CONFIGS)


@pytest.mark.parametrize("N,K,PQ", [(256, 32, 784), (64, 64, 12544), (1, 32, 784), (1024, 64, 196), (600, 7, 49),
                                    (5, 2, 1)])
def test_bias_splits_cover_every_image_once(N, K, PQ):
    nchunk, splits = implicit_gemm.bias_splits(N, K, PQ)
    assert nchunk >= 1 and splits >= 1
    assert (splits - 1) * nchunk < N <= splits * nchunk  # every image in exactly one chunk, none empty
    if splits > 1:
        assert nchunk * PQ >= 2048  # each block still sums a useful amount (8 elements per thread)


def test_backward_data_splits_only_stride_1_and_only_small_batches():
    with runtime.launch_cost_regime(runtime.GRAPH_LAUNCH_S):
        small = implicit_gemm.data_plan(conv_dims((1, 32, 14, 14), (64, 32, 5, 5), 1, 2))
        strided = implicit_gemm.data_plan(conv_dims((1, 32, 14, 14), (64, 32, 5, 5), 2, 2))
        big = implicit_gemm.data_plan(conv_dims((256, 64, 56, 56), (64, 64, 3, 3), 1, 1))
    assert small[2] > 1 and small[1] % small[0].bk == 0
    assert strided[2] == 1
    assert big[2] == 1


@pytest.mark.parametrize("x_shape,w_shape,stride,padding", [
    ((64, 32, 14, 14), (64, 32, 5, 5), 1, 2),     # LeNet conv2 at batch 64
    ((1, 7, 13, 17), (130, 7, 3, 3), 1, 0),
    ((16, 128, 28, 28), (512, 128, 1, 1), 2, 0),  # strided: backward-data by stride phase, unsplit
    ((256, 64, 56, 56), (64, 64, 3, 3), 1, 1),
])
def test_tuned_implicit_gemm_plans(x_shape, w_shape, stride, padding):
    """The plans each phase's implicit-GEMM tuning times: the model's plan first, no duplicates, an
    unsplit plan among them, no more than TUNE_COUNT + 2, strided backward-data never split, every other
    plan within the partials cap, and the layer's workspace sized for the largest of them."""
    dims = conv_dims(x_shape, w_shape, stride, padding)
    N, C, H, W, K, R, S, P, Q = dims[:9]
    for cost in (20e-6, runtime.GRAPH_LAUNCH_S):
        with runtime.launch_cost_regime(cost):
            need = conv2d_workspace_size(x_shape, w_shape, stride, padding)
            phases = (("forward", implicit_gemm.forward_candidates, implicit_gemm.forward_plan, K * N * P * Q),
                      ("backward_data", implicit_gemm.data_candidates, implicit_gemm.data_plan, N * C * H * W),
                      ("backward_weights", implicit_gemm.weights_candidates, implicit_gemm.weights_plan, K * C * R * S))
            for phase, candidates, model_plan, size in phases:
                plans, first = candidates(dims), model_plan(dims)
                assert plans[0] == (first[0], first[2]), phase
                assert len(set(plans)) == len(plans) <= implicit_gemm.TUNE_COUNT + 2
                assert any(s == 1 for _, s in plans)
                for cfg, splits in plans:
                    assert cfg in implicit_gemm.CONFIGS
                    assert splits == 1 or splits * size <= max(implicit_gemm.TUNE_MAX_PARTIALS, first[2] * size)
                    assert need >= (splits > 1) * splits * size
                if phase == "backward_data" and stride != 1:
                    assert all(s == 1 for _, s in plans)


def test_launch_floor():
    """A call's host time: its first launch at the regime's cost, each further one at ~10 us eagerly (one
    more CuPy launch), 1 us in a graph; the cost models weigh a split-K plan's reduce launch at that."""
    assert runtime.launch_floor(1, 20e-6) == pytest.approx(20e-6)
    assert runtime.launch_floor(2, 20e-6) == pytest.approx(20e-6 + runtime.EAGER_EXTRA_LAUNCH_S)
    assert runtime.launch_floor(3, runtime.GRAPH_LAUNCH_S) == pytest.approx(3 * runtime.GRAPH_LAUNCH_S)
    with runtime.launch_cost_regime(5e-6):
        assert runtime.launch_floor(2) == pytest.approx(10e-6)
    cfg = tiles.CONFIG_BY_NAME["128x128x8_8x8"]
    # (64, 10, 128): a few microseconds of GPU time, so the floor is the estimate
    assert tiles.estimate_seconds(cfg, 64, 10, 128, 2, launch_s=20e-6) == pytest.approx(30e-6)


def test_small_layer_tuning_times_the_fastest_gpu_plan():
    """GoogLeNet's 5x5 backward-data at batch 16 (16 input channels: M = 16): eagerly the model's first
    plans tie at the launch floor and are all 128-row tiles; the plan it ranks fastest on the GPU alone (a
    32-row tile, split) is timed as well, and the partials of every timed plan fit the workspace."""
    dims = conv_dims((16, 16, 14, 14), (48, 16, 5, 5), 1, 2)
    M, cols, red, max_splits = implicit_gemm._gemm_sizes(dims, "backward_data")
    for cost in (20e-6, runtime.GRAPH_LAUNCH_S):
        with runtime.launch_cost_regime(cost):
            plans = implicit_gemm.data_candidates(dims)
            gpu = {p: tiles.estimate_seconds(p[0], M, cols, red, p[1], launch_s=0.0) for p in plans}
            best = min(tiles.estimate_seconds(c, M, cols, red, s, launch_s=0.0)
                       for c in implicit_gemm.CONFIGS for s in (1, 2, 4, 8, 16, 32) if s == 1 or red // s >= 64)
            assert min(gpu.values()) == pytest.approx(best)
            fastest = min(gpu, key=gpu.get)
            assert fastest[0].bm == 32 and fastest[1] > 1
            need = conv2d_workspace_size((16, 16, 14, 14), (48, 16, 5, 5), 1, 2)
            assert need >= max(s * 16 * 16 * 14 * 14 for _, s in plans if s > 1)


@pytest.mark.parametrize("x_shape,w_shape,stride,padding", [
    ((1, 32, 14, 14), (64, 32, 5, 5), 1, 2),      # small batch: forward / backward-data split-K
    ((64, 3, 224, 224), (64, 3, 7, 7), 2, 3),     # few channels: few_channels backward-weights partials
    ((64, 256, 28, 28), (256, 256, 3, 3), 1, 1),  # Winograd candidate
    ((33, 17, 29, 31), (45, 17, 3, 3), 1, 1),
])
def test_workspace_covers_every_candidate(x_shape, w_shape, stride, padding):
    for cost in (20e-6, runtime.GRAPH_LAUNCH_S):
        with runtime.launch_cost_regime(cost):
            need = conv2d_workspace_size(x_shape, w_shape, stride, padding)
            dims = conv_dims(x_shape, w_shape, stride, padding)
            N, C, H, W, K, R, S, P, Q = dims[:9]
            _, _, f_splits = implicit_gemm.forward_plan(dims)
            _, _, w_splits = implicit_gemm.weights_plan(dims)
            _, _, d_splits = implicit_gemm.data_plan(dims)
            assert need >= (f_splits > 1) * f_splits * K * N * P * Q
            assert need >= (w_splits > 1) * w_splits * K * C * R * S
            assert need >= (d_splits > 1) * d_splits * N * C * H * W
            assert need >= K * implicit_gemm.bias_splits(N, K, P * Q)[1]
            if few_channels.weights_plan(dims, 132) is not None:
                assert need >= few_channels.workspace_size(x_shape, w_shape, stride, padding, 132)
            for phase in select.PHASES:
                if select.winograd_ok(dims, phase):
                    assert need >= winograd.workspace_size(x_shape, w_shape, stride, padding, phase)


def test_winograd_candidates():
    def ok(x_shape, w_shape, stride, padding, phase, tile=2):
        return select.winograd_ok(conv_dims(x_shape, w_shape, stride, padding), phase, 132, tile)

    assert ok((64, 256, 28, 28), (256, 256, 3, 3), 1, 1, "forward")
    assert ok((256, 64, 56, 56), (64, 64, 3, 3), 1, 1, "backward_data")
    assert ok((64, 256, 28, 28), (256, 256, 3, 3), 1, 1, "backward_weights")
    assert not ok((256, 3, 32, 32), (32, 3, 3, 3), 1, 1, "forward")          # < 16 channels
    assert not ok((64, 128, 28, 28), (256, 128, 3, 3), 2, 1, "forward")      # stride 2
    for phase in select.PHASES:                                              # 5x5: F(2x2, 5x5) only
        assert ok((256, 32, 14, 14), (64, 32, 5, 5), 1, 2, phase)
        assert not ok((256, 32, 14, 14), (64, 32, 5, 5), 1, 2, phase, tile=4)
        assert ok((64, 96, 28, 28), (128, 96, 3, 3), 1, 1, phase, tile=4)
    assert not ok((64, 32, 14, 14), (64, 32, 7, 7), 1, 3, "forward")         # 7x7
    assert not ok((64, 32, 14, 14), (64, 32, 5, 3), 1, 1, "forward")         # 5x3
    assert not ok((64, 32, 14, 14), (64, 32, 5, 5), 1, 5, "forward")         # padding 5 > 4
    # a batch whose workspace exceeds 2 GB: every phase runs it in chunks of images
    for phase in select.PHASES:
        assert ok((8192, 32, 16, 16), (64, 32, 3, 3), 1, 1, phase)


@pytest.mark.parametrize("x_shape,w_shape,padding", [((64, 128, 112, 112), (128, 128, 3, 3), 1),
                                                     ((64, 64, 224, 224), (64, 64, 3, 3), 1),
                                                     ((8192, 32, 16, 16), (64, 32, 3, 3), 1),
                                                     ((7, 17, 9, 10), (19, 17, 3, 3), (1, 2))])
@pytest.mark.parametrize("phase", ["forward", "backward_data", "backward_weights"])
def test_winograd_chunks(x_shape, w_shape, padding, phase):
    """``winograd.chunk_images``: the whole batch when it fits the bound; else equal chunks, each within
    the bound, and no fewer chunks than the bound allows (one more image per chunk would not fit, or
    would not reduce the chunk count); 0 when a single image exceeds it."""
    N = x_shape[0]

    def size(images=None):
        return winograd.workspace_size(x_shape, w_shape, 1, padding, phase, 132, images)

    def chunk(limit):
        return winograd.chunk_images(x_shape, w_shape, padding, phase, limit, 132)

    whole = size()
    assert chunk(whole) == N
    one = size(1)
    for limit in (whole // 2, whole // 3 + 7, whole // 5):
        n = chunk(limit)
        if phase == "backward_weights":    # the fewest chunks (<= MAX_WEIGHT_SPLITS) whose workspace fits
            counts = range(1, min(N, winograd.MAX_WEIGHT_SPLITS) + 1)
            fits = [c for c in counts if size(-(-N // c)) <= limit]
            assert n == (-(-N // fits[0]) if fits else 0)
            continue
        if limit < one:     # the filter transform alone may exceed it for a small batch
            assert n == 0
            continue
        assert 1 <= n < N
        assert size(n) <= limit
        chunks = -(-N // n)
        fewer = -(-N // (chunks - 1)) if chunks > 1 else N
        assert size(fewer) > limit
    if phase != "backward_weights":
        assert chunk(one - 1) == 0
    with pytest.raises(ValueError, match="phase='weights'"):
        winograd.chunk_images(x_shape, w_shape, padding, "weights", whole)


@pytest.mark.parametrize("r,tile", [(3, 2), (3, 4), (5, 2)], ids=["3x3-tile2", "3x3-tile4", "5x5-tile2"])
@pytest.mark.parametrize("images", [None, 64, 40, 7, 1])
def test_winograd_weights_chunk_plan(images, r, tile):
    """The weight gradient (F(r x r, tile x tile)) in chunks of ``images`` images: chunks cover the batch in order, each a
    contiguous run of images (the last one possibly short, with its own tile count); each chunk's t
    ranges cover its Tp; the slabs of partials follow one another; at most MAX_WEIGHT_SPLITS slabs in
    all unless there are more chunks than that (one slab each); the workspace is V and Y of the largest
    chunk plus every slab."""
    prob = winograd.checked_problem((64, 64, 112, 112), (128, 64, r, r), 1, r // 2, "test")   # "same" padding
    wp = winograd.WeightsPass(prob, 132, images=images, tile=tile)
    xis = (tile + r - 1) ** 2
    assert wp.xis == xis and winograd.KERNEL_PREFIX[wp.geo.m, wp.geo.r] == {(3, 2): "conv_winograd", (3, 4): "conv_winograd4",
                                               (5, 2): "conv_winograd25"}[r, tile]
    n_chunks = -(-64 // (images or 64))
    assert len(wp.chunks) == n_chunks and wp.images == (images or 64)
    nxt, slab = 0, 0
    for n0, geo, t_chunk, splits, first in wp.chunks:
        assert n0 == nxt and first == slab and geo.N == min(wp.images, 64 - n0)
        assert (splits - 1) * t_chunk < geo.Tp <= splits * t_chunk
        nxt, slab = n0 + geo.N, slab + splits
    assert nxt == 64 and wp.slabs == slab
    assert wp.slabs <= max(winograd.MAX_WEIGHT_SPLITS, n_chunks)
    T = -(-wp.images * (112 // tile) ** 2 // 4) * 4     # 112x112 output in tile x tile tiles, rounded up to 4
    assert wp.size == xis * 64 * T + xis * 128 * T + wp.slabs * xis * 128 * 64
    with pytest.raises(ValueError, match="tile=3"):
        winograd.WeightsPass(prob, 132, tile=3)
    if r == 5:
        with pytest.raises(ValueError, match=r"tile=4 with a 5x5 kernel; use one of \(2,\)"):
            winograd.WeightsPass(prob, 132, tile=4)


def test_vgg_layers_take_winograd_in_chunks():
    """VGG-16's 3x3 layers at batch 64 (112x112, 224x224) need 2.3-6.1 GB of Winograd workspace at once:
    every phase takes it in chunks within the 2 GB cap, and the layer's workspace (what a model
    allocates) stays within the cap."""
    for x_shape, w_shape in [((64, 64, 112, 112), (128, 64, 3, 3)), ((64, 128, 112, 112), (128, 128, 3, 3)),
                             ((64, 64, 224, 224), (64, 64, 3, 3))]:
        dims = conv_dims(x_shape, w_shape, 1, 1)
        assert winograd.workspace_size(x_shape, w_shape, 1, 1, "forward") > select.WINOGRAD_MAX_WORKSPACE
        for phase in select.PHASES:
            assert select.winograd_ok(dims, phase, 132) and 1 <= select.winograd_images(dims, phase, 132) < 64
        assert select.workspace_size(dims, 132) <= select.WINOGRAD_MAX_WORKSPACE


def test_conv_choice_is_looked_up_before_any_planning(monkeypatch):
    """A repeated eager call pays one dict lookup: the candidates (eligibility checks, partials) are only
    built on a cache miss, and a shape with one candidate is cached without timing. The stand-in device
    and the autotuner's own cache are the runtime's (no GPU needed)."""
    import sys
    import types

    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(Device=lambda: types.SimpleNamespace(id=0),
                                      runtime=types.SimpleNamespace(getDevice=lambda: 0),
                                      get_current_stream=lambda: types.SimpleNamespace(ptr=0))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(runtime, "_tuned", {})
    monkeypatch.setattr(select, "candidates", lambda dims, phase, sms=132: ["implicit_gemm"])
    built = []
    dims = conv_dims((1, 1, 2, 2), (1, 1, 1, 1), 1, 0)

    def run(name):
        built.append(name)

    assert select.choose("backward_data", dims, run) == "implicit_gemm"
    assert select.choose("backward_data", dims, lambda name: pytest.fail("built on a hit")) == "implicit_gemm"
    assert built == []   # a single candidate is cached untimed: never run


@pytest.mark.parametrize("x_shape,w_shape,stride,padding,forward,data,weights", [
    # LeNet conv1: few channels -> the few-channel kernels join the implicit GEMMs in every phase
    ((256, 1, 28, 28), (32, 1, 5, 5), 1, 2, {"implicit_gemm", "few_channels"}, {"implicit_gemm", "few_channels"},
     {"implicit_gemm", "few_channels"}),
    # LeNet conv2: 5x5, 32 channels -> F(2x2, 5x5) Winograd in every phase, patch for both backward passes
    ((256, 32, 14, 14), (64, 32, 5, 5), 1, 2, {"implicit_gemm", "winograd"}, {"implicit_gemm", "winograd", "patch"},
     {"implicit_gemm", "winograd", "patch"}),
    # 3x3, 256 channels -> Winograd with both tiles in all three phases, patch in the backward ones
    ((64, 256, 28, 28), (256, 256, 3, 3), 1, 1, {"implicit_gemm", "winograd", "winograd4"},
     {"implicit_gemm", "winograd", "winograd4", "patch"}, {"implicit_gemm", "winograd", "winograd4", "patch"}),
    # stride 2: neither Winograd nor patch
    ((64, 128, 28, 28), (256, 128, 3, 3), 2, 1, {"implicit_gemm"}, {"implicit_gemm"}, {"implicit_gemm"}),
    # a speech conv, one channel, 5x20 stride 2: few_channels for backward-data only (S > 8 elsewhere)
    ((16, 1, 161, 700), (32, 1, 5, 20), 2, 0, {"implicit_gemm"}, {"implicit_gemm", "few_channels"},
     {"implicit_gemm"}),
    # a ResNet downsample shortcut, 1x1 stride 2, no padding: strided_1x1 for backward-data
    ((64, 256, 56, 56), (512, 256, 1, 1), 2, 0, {"implicit_gemm"}, {"implicit_gemm", "strided_1x1"},
     {"implicit_gemm"}),
    # 1x1 stride 2 with padding: the scatter does not apply
    ((4, 16, 9, 9), (8, 16, 1, 1), 2, 1, {"implicit_gemm"}, {"implicit_gemm"}, {"implicit_gemm"}),
    # DeepSpeech 2's conv2, 21x11 stride (2, 1): "fft" in every phase
    ((16, 32, 41, 350), (96, 32, 21, 11), (2, 1), (10, 5), {"implicit_gemm", "fft"}, {"implicit_gemm", "fft"},
     {"implicit_gemm", "fft"}),
    # a 5x10 stride-2 speech conv (50 taps): "fft" too
    ((16, 32, 79, 341), (32, 32, 5, 10), 2, 0, {"implicit_gemm", "fft"}, {"implicit_gemm", "fft"},
     {"implicit_gemm", "fft"}),
])
def test_candidates(x_shape, w_shape, stride, padding, forward, data, weights):
    """Which algorithms each phase's "auto" weighs for a layer: the eligibility rules of select.py (plain
    Python, no GPU), each phase's names among that phase's algorithms, "implicit_gemm" first."""
    dims = conv_dims(x_shape, w_shape, stride, padding)
    got = {phase: select.candidates(dims, phase, 132) for phase in select.PHASES}
    assert {phase: set(names) for phase, names in got.items()} == {
        "forward": forward, "backward_data": data, "backward_weights": weights}
    for phase, names in got.items():
        assert names[0] == "implicit_gemm" and set(names) <= set(select.ALGOS[phase])
    with pytest.raises(ValueError, match="phase"):
        select.candidates(dims, "weights")


def test_algo_names():
    from custom_impl.gpu import conv

    assert conv.FORWARD_ALGOS == ("implicit_gemm", "winograd", "few_channels", "winograd4", "fft")
    assert conv.DATA_ALGOS == ("implicit_gemm", "few_channels", "winograd", "patch", "strided_1x1", "winograd4",
                               "fft")
    assert conv.WEIGHTS_ALGOS == ("implicit_gemm", "few_channels", "winograd", "winograd4", "patch", "fft")
    select.check_algo("auto", "forward", "conv2d_forward")
    with pytest.raises(ValueError, match="algo='patch'; use one of 'auto', 'implicit_gemm'"):
        select.check_algo("patch", "forward", "conv2d_forward")
    with pytest.raises(ValueError, match="algo='v3'"):
        select.check_algo("v3", "backward_data", "conv2d_backward_data")


def test_few_channels_weights_launch_rule():
    """Backward-weights of few channels: "bands" wherever it has a plan, else "rows" (C=8, a 7x5 kernel
    and 200 output columns: the bands' two staging buffers exceed 96 KB, the rows' one fits 48 KB)."""
    usual = conv_dims((256, 3, 32, 32), (32, 3, 3, 3), 1, 1)
    assert isinstance(few_channels.weights_plan(usual, 132), few_channels.BandsPlan)
    wide = conv_dims((2, 8, 10, 204), (4, 8, 7, 5), 1, 0)
    assert few_channels.weights_plan(wide, 132, "bands") is None
    assert isinstance(few_channels.weights_plan(wide, 132), few_channels.RowsPlan)
    with pytest.raises(ValueError, match="launch"):
        few_channels.weights_plan(usual, 132, "v2")


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


def test_clear_tuned_empties_the_memos_made_from_tuned_choices():
    """What a module derives from tuned choices (``runtime.tuned_memo``: the implicit GEMM's launches of a
    tuned plan) goes with them, so a new timing is never bypassed by an old plan's launches."""
    memo = runtime.tuned_memo()
    memo["a layer's launches"] = object()
    runtime.clear_tuned()
    assert memo == {} and runtime.tuned_choices() == {}
    assert implicit_gemm._launchers == {}


def test_auto_times_exactly_the_candidates(monkeypatch):
    """select.choose hands runtime.autotune one call per candidate (built from ``run``), keyed by phase,
    shape and the extra key, with "implicit_gemm" as the default for a CUDA-graph capture."""
    seen = {}

    def fake_autotune(key, candidates, default):
        calls = candidates()
        for call in calls.values():
            call()
        seen[key] = (list(calls), default)
        return default

    monkeypatch.setattr(runtime, "autotune", fake_autotune)
    dims = conv_dims((64, 256, 28, 28), (256, 256, 3, 3), 1, 1)
    ran = []
    assert select.choose("backward_weights", dims, ran.append, 132) == "implicit_gemm"
    assert select.choose("forward", dims, ran.append, 132, key=(True,)) == "implicit_gemm"
    assert seen == {("conv", "backward_weights", dims): (["implicit_gemm", "winograd", "winograd4", "patch"],
                                                         "implicit_gemm"),
                    ("conv", "forward", dims, True): (["implicit_gemm", "winograd", "winograd4"], "implicit_gemm")}
    assert ran == ["implicit_gemm", "winograd", "winograd4", "patch", "implicit_gemm", "winograd", "winograd4"]


def _lab_module(name):
    import importlib.util

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    spec = importlib.util.spec_from_file_location(name, os.path.join(root, "lab", "conv", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_few_channels_kernels_replayed_on_the_cpu(capsys):
    """lab/conv/few_channels_emulate.py: the few-channel kernels' index math replayed in NumPy with the
    product's launch plans (both backward-weights launch shapes, the reduces, forward, backward-data) on
    small shapes; it asserts float64 agreement (exact arithmetic on the same index math: 1e-12 relative)."""
    _lab_module("few_channels_emulate").main(quick=True)
    assert "all cases ok" in capsys.readouterr().out


def test_fft_backward_data_replayed_on_the_cpu(capsys):
    """lab/conv/fft_emulate.py: the "fft" backward-data's and forward's plans, tile windows, workspace layouts
    and read-out offsets replayed in NumPy (np.fft for the kernels' transforms), against a direct float64
    convolution; exact to float64 rounding (its bar 1e-12 of max |out|; a wrong offset or a wrap-around is
    ~1)."""
    assert _lab_module("fft_emulate").main() == 0
    assert "worst" in capsys.readouterr().out


@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None,
                    reason="no C++ compiler (g++ or $CXX) to build the kernels for the host")
def test_fft_kernels_run_on_the_host(capsys):
    """lab/conv/fft_kernels_check.py: conv_fft.cu's four kernels built for the host (a host thread per CUDA
    thread, a barrier per __syncthreads) on the product's plans and launch arguments, both phases, against a
    direct float64 convolution; its bar 1e-5 of max |out| (float32 transforms come to ~3e-7; a wrong index
    is ~1)."""
    assert _lab_module("fft_kernels_check").main() == 0
    assert "worst" in capsys.readouterr().out


@pytest.mark.parametrize("x_shape,w_shape,stride,padding,sizes,tiles", [
    # DeepSpeech 2's conv2: 64 x 128 transforms, th = 44 >= 41 rows, tw = 118: 3 tiles across 350
    ((64, 32, 41, 350), (96, 32, 21, 11), (2, 1), (10, 5), (64, 128), (1, 3)),
    ((64, 32, 81, 350), (32, 32, 21, 11), (2, 1), (10, 5), (64, 128), (2, 3)),
    # 5x10 stride 2: 32 rows suffice (th = 28)
    ((64, 32, 79, 341), (32, 32, 5, 10), (2, 2), (0, 0), (32, 128), (3, 3)),
])
def test_fft_plan(x_shape, w_shape, stride, padding, sizes, tiles):
    """The transform size with the least bin-GEMM work (tiles x bins), its tiles, and the workspace: Wh once,
    E and X per chunk, equal chunks of images under a cap, none where not one image fits."""
    from custom_impl.gpu.conv import fft

    dims = conv_dims(x_shape, w_shape, stride, padding)
    p = fft.plan(dims)
    N, K, C = x_shape[0], w_shape[0], w_shape[1]
    assert (p.lh, p.lw) == sizes and (p.tiles_h, p.tiles_w) == tiles and p.images == N
    assert p.th * p.tiles_h >= x_shape[2] and p.tw * p.tiles_w >= x_shape[3]
    assert p.bins == p.lh * (p.lw // 2 + 1)
    assert p.size == 2 * p.bins * (K * C + N * p.tiles * (K + C))
    assert fft.workspace_size(dims) == p.size <= conv2d_workspace_size(x_shape, w_shape, stride, padding)
    assert fft.workspace_size(dims, "forward") <= conv2d_workspace_size(x_shape, w_shape, stride, padding)
    # the forward tiles its stride-1 output z, which here has the rows and columns of x: the same tiles, E
    # and X with the channel counts swapped (it reduces over C into K)
    f = fft.plan(dims, "forward")
    assert f[:8] == p[:8] and (f.n_e, f.n_x) == (p.n_x, p.n_e)
    # the weight gradient: the same tiles over the whole batch (they are its reduction), x's and dy's
    # spectra and dW's; no chunks: a cap below the whole leaves it out
    w = fft.plan(dims, "backward_weights")
    assert w[:8] == p[:8] and w.size == 2 * p.bins * (N * p.tiles * (C + K) + K * C)
    assert fft.plan(dims, "backward_weights", max_elements=w.size - 1) is None
    per_image = 2 * p.bins * p.tiles * (K + C)
    capped = fft.plan(dims, max_elements=p.n_wh + 24 * per_image)
    assert capped.images == 22   # 64 images within 24 per chunk: three equal chunks of 22
    assert fft.plan(dims, max_elements=p.n_wh + per_image - 1) is None


def test_fft_fits_only_many_taps_and_channels():
    from custom_impl.gpu.conv import fft

    assert not fft.fits(conv_dims((8, 64, 28, 28), (64, 64, 5, 5), 1, 2))     # 25 taps
    assert not fft.fits(conv_dims((8, 4, 64, 64), (64, 4, 7, 7), 1, 3))       # 4 input channels
    # 70 x 70 taps: no transform of at most MAX_POINTS (128 x 64 or 64 x 128) holds the kernel
    assert not fft.fits(conv_dims((8, 16, 200, 200), (16, 16, 70, 70), 1, 0))
    assert fft.fits(conv_dims((8, 16, 161, 700), (16, 16, 41, 11), 2, 0))
    assert fft.fits(conv_dims((8, 16, 64, 64), (16, 16, 7, 7), 1, 3))


def test_winograd_kernels_replayed_on_the_cpu(capsys):
    """lab/conv/winograd_emulate.py: the Winograd kernels' transforms and workspace layout replayed in
    NumPy with the product's passes, against a direct float64 convolution (it asserts the agreement)."""
    _lab_module("winograd_emulate").main()
    out = capsys.readouterr().out
    assert "match the direct convolution" in out and "5x5 cases match" in out


@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None,
                    reason="no C++ compiler (g++ or $CXX) to build the transform functions for the host")
def test_winograd_6x6_transform_functions(capsys):
    """lab/conv/winograd_transforms_check.py: conv_winograd.cu's 6x6-domain transform functions (F(4x4, 3x3)
    / F(3x3, 4x4) and F(2x2, 5x5) / F(5x5, 2x2)), compiled for the host, apply exactly the matrices the NumPy emulation checks against the
    direct convolution (it asserts every output; a wrong coefficient or sign fails it)."""
    assert _lab_module("winograd_transforms_check").main() == 0
    assert "match their matrices" in capsys.readouterr().out


def test_every_conv_kernel_asked_for_exists():
    """Every kernel name the conv modules launch (a string "conv_..." passed to their ``kernel``) is an
    ``extern "C" __global__`` entry point of the module's FAMILY file; and the kernels the product no
    longer carries (the direct, gathered and per-pixel variants, in lab/conv) are gone from it."""
    import os
    import re

    from custom_impl.gpu.conv import few_channels, patch

    for mod in (implicit_gemm, winograd, few_channels, patch):
        with open(mod.__file__, encoding="utf-8") as fh:
            asked = set(re.findall(r'kernel\(\s*"(conv_\w+)"', fh.read()))
        assert asked, mod.__name__
        with open(runtime.kernel_path(mod.FAMILY), encoding="utf-8") as fh:
            code = fh.read()
        defined = set(re.findall(r'extern\s+"C"\s+__global__\s+(?:void\s+)?(?:__launch_bounds__\([^)]*\)\s*)?'
                                 r'(?:void\s+)?(\w+)\s*\(', code))
        assert asked <= defined, (mod.__name__, sorted(asked - defined))
        assert not [n for n in defined if re.search(r"_v[0-9]|direct|gather|pixel", n)], sorted(defined)
    assert os.path.exists(runtime.kernel_path("conv_implicit_gemm"))


@pytest.mark.parametrize("x_shape,w_shape,stride", [((64, 256, 56, 56), (512, 256, 1, 1), 2),
                                                     ((1, 64, 7, 12), (96, 64, 1, 1), (2, 2)),
                                                     ((3, 5, 9, 11), (7, 5, 1, 1), (3, 2))])
def test_strided_1x1_workspace(x_shape, w_shape, stride):
    """The strided-1x1 backward-data keeps dxc (N*C*P*Q) and the stride-1 GEMM's split-K partials after it
    in the workspace: its size is their sum, and the layer's workspace covers it."""
    from custom_impl.gpu.conv import implicit_gemm, strided_1x1

    dims = conv_dims(x_shape, w_shape, stride, 0)
    flat = strided_1x1.stride1_dims(dims)
    assert flat == conv_dims((dims.N, dims.C, dims.P, dims.Q), w_shape, 1, 0)
    want = dims.N * dims.C * dims.P * dims.Q + implicit_gemm.workspace_size(flat, 132)
    assert strided_1x1.workspace_size(dims, 132) == want
    assert select.workspace_size(dims, 132) >= want
    assert strided_1x1.workspace_size(conv_dims(x_shape, w_shape, stride, 1), 132) == 0


def test_thin_plans_apply_to_their_layouts_only():
    """The thin kernels serve a forward-layout GEMM with <= 16 outputs: the narrowest width that fits, an
    unsplit plan first, and split plans that give about 4 blocks per SM with >= 128 k per split; every
    other layout or width gets none."""
    from custom_impl.gpu import thin

    plans = thin.candidates(8192, 10, 1024, False, True, 132)
    assert {p[0].name for p in plans} == {"thin_n16"} and plans[0][1:] == (1, False)
    plans = thin.candidates(64, 8, 32768, False, True, 132)   # 4 blocks unsplit
    assert {p[0].name for p in plans} == {"thin_n8"}
    assert 3 * 132 <= thin.ThinConfig(8).blocks(64) * max(p[1] for p in plans) <= 5 * 132
    # a shorter K caps the split at 128 k per split
    assert max(p[1] for p in thin.candidates(64, 8, 4096, False, True, 132)) == 4096 // thin.MIN_K_PER_SPLIT
    for M, N, ta, tb in ((8192, 10, False, False), (8192, 10, True, True), (10, 8192, True, False),
                         (8192, 17, False, True), (22400, 29, False, True)):
        assert thin.candidates(M, N, 1024, ta, tb, 132) == []


def test_dense_algorithm_names_the_tuned_plan_of_each_phase(monkeypatch):
    """``dense_algorithm`` reads the GEMM autotuner's cache (stubbed here: no GPU): each phase's matrix
    product (forward x @ W^T, backward-data dy @ W, backward-weights dy^T @ x) under its own key, for the
    current device and launch-cost regime only; None before a choice exists."""
    from custom_impl.gpu import dense, gemm, thin

    N, F, U = 8192, 1024, 10
    cost = runtime.launch_cost()
    fake = {
        (0, cost, ("gemm", N, U, F, False, True, "none", False, False, 0, 0, 0)):
            (thin.THIN_BY_NAME["thin_n16"], 1, False),
        (0, cost, ("gemm", U, F, N, True, False, "none", True, False, 0, 0, 0)):
            (tiles.CONFIG_BY_NAME["32x64x8_4x8"], 32, True),
        (1, cost, ("gemm", N, F, U, False, False, "none", True, False, 0, 0, 0)):
            (tiles.CONFIG_BY_NAME["128x128x8_8x8"], 1, False),
    }
    monkeypatch.setattr(runtime, "_tuned", fake)
    monkeypatch.setattr(runtime, "device_id", lambda: 0)
    assert dense.dense_algorithm("forward", (N, F), (U, F)) == "thin_n16"
    assert dense.dense_algorithm("backward_weights", (N, F), (U, F)) == "32x64x8_4x8 x32 serial"
    assert dense.dense_algorithm("backward_data", (N, F), (U, F)) is None      # only device 1 has one
    with runtime.launch_cost_regime(runtime.GRAPH_LAUNCH_S):
        assert dense.dense_algorithm("forward", (N, F), (U, F)) is None         # another regime
    assert dense.dense_algorithm("forward", (N, F), (U, F), precision="bf16") == "tensor cores"
    assert gemm.tuned_plan(N, U, F, False, True) == "thin_n16"
    with pytest.raises(ValueError, match="phase='inference'"):
        dense.dense_algorithm("inference", (N, F), (U, F))
    with pytest.raises(ValueError, match="W is stored"):
        dense.dense_algorithm("forward", (N, F), (F, U))
