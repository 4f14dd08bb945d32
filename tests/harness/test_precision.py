"""The precision axis on the CPU: argument checks of both builds, the reference's TF32 / autocast scopes
(set while a model's method runs, restored after, also on an exception), the parity bars per precision and
the 2x-PyTorch rule, suites' ``precisions``, ``--precision``, targets and report at tf32 / bf16."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import custom_impl
import reference_impl
from harness import cli, parity, suites


def test_precision_names_agree_across_packages():
    assert custom_impl.PRECISIONS == reference_impl.PRECISIONS == suites.PRECISIONS == ("fp32", "tf32", "bf16")
    assert tuple(parity.UNIT_ROUNDOFF) == suites.PRECISIONS


@pytest.mark.parametrize("build", [custom_impl.build, reference_impl.build])
def test_builds_check_precision_on_the_cpu(build):
    assert build("mlp-mnist", device="cpu").precision == "fp32"
    assert build("mlp-mnist", device="cpu", precision="fp32").precision == "fp32"
    for p in ("tf32", "bf16"):
        with pytest.raises(ValueError, match=rf"precision '{p}' needs device 'gpu'.*device 'cpu' runs 'fp32' only"):
            build("mlp-mnist", device="cpu", precision=p)
    with pytest.raises(ValueError, match=r"unknown precision 'fp16'; choose one of 'fp32', 'tf32', 'bf16'"):
        build("mlp-mnist", device="cpu", precision="fp16")


def test_reference_oracle_takes_no_precision():
    with pytest.raises(ValueError, match="mode of float32 models"):
        reference_impl.build("mlp-mnist", dtype="float64", precision="bf16")


def _flags():
    return (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
            torch.get_float32_matmul_precision())


def test_precision_scope_sets_and_restores_flags():
    reference_impl.build("mlp-mnist")   # strict FP32 for the process, as every fp32 model relies on
    before = _flags()
    assert before == (False, False, "highest")
    with reference_impl.precision_scope("tf32"):
        assert _flags() == (True, True, "high")
        with reference_impl.precision_scope("bf16"):     # bf16 keeps what stays in FP32 strict
            assert _flags() == (False, False, "highest")
        assert _flags() == (True, True, "high")
    assert _flags() == before
    with pytest.raises(RuntimeError, match="boom"):
        with reference_impl.precision_scope("tf32"):
            raise RuntimeError("boom")
    assert _flags() == before
    with pytest.raises(ValueError, match="unknown precision"):
        with reference_impl.precision_scope("fp8"):
            pass


def _cpu_model_of(precision):
    """A reference model that runs its precision's scope on the CPU (``build`` allows tf32 / bf16 on the
    GPU only; the scope logic is the same: the flags, and autocast on the model's device type)."""
    import modelspec
    from reference_impl.model import ReferenceModel

    return ReferenceModel(modelspec.load("mlp-mnist"), "cpu", "cpu", seed=0, precision=precision)


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_reference_model_scopes_its_own_calls(precision):
    import numpy as np

    reference_impl.build("mlp-mnist")
    before = _flags()
    m = _cpu_model_of(precision)
    seen = []

    def hook(module, inputs, output):
        seen.append((_flags(), torch.is_autocast_enabled("cpu"), output.dtype))
    m.net[0].register_forward_hook(hook)
    x = np.random.default_rng(0).standard_normal((5, 784)).astype(np.float32)
    y = np.arange(5) % 10
    logits = m.to_numpy(m.forward(x))
    assert logits.dtype == np.float32 and logits.shape == (5, 10)
    loss = m.train_step(x, y, lr=0.01, momentum=0.9)
    assert loss.dtype == torch.float32          # the loss stays FP32 (autocast's policy for cross_entropy)
    assert all(p.dtype == torch.float32 for p in m.params.values())   # FP32 master weights
    m.forward_backward(x, y)
    want_flags = (True, True, "high") if precision == "tf32" else (False, False, "highest")
    want_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    assert seen == [(want_flags, precision == "bf16", want_dtype)] * 3
    assert _flags() == before and not torch.is_autocast_enabled("cpu")   # restored after every call


def test_precision_flags_per_precision_are_read_back():
    reference_impl.build("mlp-mnist")
    now = reference_impl.precision_flags()
    tf32 = reference_impl.precision_flags("tf32")
    bf16 = reference_impl.precision_flags("bf16")
    assert tf32["torch.backends.cuda.matmul.allow_tf32"] and tf32["torch.backends.cudnn.allow_tf32"]
    assert tf32["autocast"] == "off" and bf16["autocast"] == "cuda bfloat16"
    assert not bf16["torch.backends.cudnn.allow_tf32"]
    assert reference_impl.precision_flags() == now   # reading them changed nothing


def test_precision_tolerance_derivation():
    # fp32: unchanged; tf32 / bf16: + 8 u per layer row, + 48 u sqrt(L) per model row (harness/parity.py)
    assert parity.precision_tolerance("fp32", 1e-4) == 1e-4
    assert parity.precision_tolerance("tf32", 1e-4) == pytest.approx(1e-4 + 8 * 2 ** -11)
    assert parity.precision_tolerance("bf16", 1e-4) == pytest.approx(1e-4 + 8 * 2 ** -8)
    assert parity.precision_tolerance("bf16", 3e-3, layers=4, model=True) == pytest.approx(3e-3 + 48 * 2 ** -8 * 2)
    assert parity.precision_tolerance("tf32", 0.0) < parity.precision_tolerance("bf16", 0.0)
    with pytest.raises(ValueError, match="unknown precision"):
        parity.precision_tolerance("fp16", 1e-4)


def test_judge_holds_ours_to_twice_pytorch():
    u = parity.UNIT_ROUNDOFF["bf16"]
    assert parity.judge(1e-2, 5e-2, "bf16", torch_err=6e-3) == (True, pytest.approx(1.2e-2), "")
    ok, bar, why = parity.judge(1.3e-2, 5e-2, "bf16", torch_err=6e-3)
    assert not ok and bar == pytest.approx(1.2e-2) and "2x max(PyTorch's bf16 error" in why
    # PyTorch more accurate than its precision (an FP32 algorithm): the floor is 2 u, not 2x its error
    assert parity.judge(1.5 * u, 5e-2, "bf16", torch_err=1e-7)[0]
    assert not parity.judge(2.5 * u, 5e-2, "bf16", torch_err=1e-7)[0]
    # the precision's own bar still applies, and fp32 rows are not held to PyTorch
    assert not parity.judge(0.1, 5e-2, "bf16", torch_err=0.2)[0]
    assert parity.judge(5e-5, 1e-4, "fp32", torch_err=1e-9)[0]
    assert not parity.judge(math.nan, 1e-4)[0] and not parity.judge(math.inf, 1e-4)[0]
    assert not parity.judge(1e-3, 5e-2, "tf32", torch_err=math.inf)[0]
    # a model row: PyTorch ran FP32 (4e-4), the rounded-operand oracle shows 0.0555: ours is held to 2x the
    # oracle, even above the precision's bar (3e-2 here)
    assert parity.judge(0.0555, 3e-2, "tf32", torch_err=4e-4, rounding_err=0.0555) == (True, pytest.approx(0.111), "")
    ok, bar, why = parity.judge(0.12, 3e-2, "tf32", torch_err=4e-4, rounding_err=0.0555)
    assert not ok and "rounded-operand oracle's 0.0555" in why
    # a small oracle error changes nothing: 2x PyTorch's error stays the bar
    assert parity.judge(1.3e-2, 5e-2, "bf16", torch_err=6e-3, rounding_err=1e-3)[1] == pytest.approx(1.2e-2)


def _suite(**section):
    return suites.parse_suite({"models": [dict({"models": ["mlp-mnist"], "batches": [1]}, **section)],
                               "dense": [{"shapes": [[4, 5, 6]], "precisions": ["bf16"]}],
                               "pool": [{"shapes": [[1, 1, 4, 4, 2, 2, 2]]}]}, "s.toml")


def test_suite_precisions_make_rows_per_precision_on_the_gpu_only():
    s = _suite(precisions=["fp32", "tf32", "bf16"], phases=["inference"], variants=["cuda", "torch-eager"])
    gpu = s.jobs("gpu")
    assert sorted({(j.kind, j.precision) for j in gpu}) == [
        ("dense", "bf16"), ("model", "bf16"), ("model", "fp32"), ("model", "tf32"), ("pool", "fp32")]
    assert {j.precision for j in s.jobs("cpu")} == {"fp32"}   # tf32 / bf16 need the tensor cores
    default = _suite()
    assert {j.precision for j in default.jobs("gpu") if j.kind == "model"} == {"fp32"}
    with pytest.raises(suites.SuiteError, match="unknown precision 'fp16'"):
        _suite(precisions=["fp16"])
    with pytest.raises(suites.SuiteError, match="unknown key 'precisions'"):
        suites.parse_suite({"pool": [{"shapes": [[1, 1, 4, 4, 2, 2, 2]], "precisions": ["bf16"]}]})


def test_set_precisions_overrides_sections():
    s = _suite()
    s.set_precisions(["bf16"])
    assert {(j.kind, j.precision) for j in s.jobs("gpu")} == {("model", "bf16"), ("dense", "bf16"), ("pool", "fp32")}
    with pytest.raises(suites.SuiteError, match="unknown precision"):
        s.set_precisions(["fp8"])


def test_cli_precision_errors(capsys):
    assert cli.main(["run", "--device", "cpu", "--suite", "quick", "--precision", "tf32", "--out", "/nonexistent/x"]) == 2
    err = capsys.readouterr().err
    assert "harness: error: --precision tf32: needs the GPU's tensor cores" in err and "Traceback" not in err
    assert cli.main(["run", "--device", "cpu", "--suite", "quick", "--precision", "fp64"]) == 2
    assert "unknown precision 'fp64'" in capsys.readouterr().err


def test_targets_at_tf32_and_bf16_use_their_own_rows():
    from harness.targets import evaluate

    def row(impl, variant, kind, workload, batch, phase, ms, precision, ok=True, status="ok"):
        return {"impl": impl, "variant": variant, "device": "gpu", "kind": kind, "workload": workload,
                "batch": str(batch), "phase": phase, "median_ms": str(ms), "status": status,
                "parity_ok": str(ok), "precision": precision}

    w = "dense_M4096_N4096_K4096"
    rows = [row("custom", "cuda", "dense", w, 4096, "forward", 2.0, "fp32"),
            row("reference", "torch", "dense", w, 4096, "forward", 1.8, "fp32"),
            row("custom", "cuda", "dense", w, 4096, "forward", 0.5, "tf32"),
            row("reference", "torch", "dense", w, 4096, "forward", 0.4, "tf32"),
            row("custom", "cuda", "dense", w, 4096, "forward", 0.4, "bf16", ok=False, status="parity_fail"),
            row("reference", "torch", "dense", w, 4096, "forward", 0.2, "bf16"),
            row("custom", "cuda", "conv2d", "c1", 8, "forward", 1.0, "tf32", status="unsupported", ok=""),
            row("reference", "torch", "conv2d", "c1", 8, "forward", 0.5, "tf32"),
            row("custom", "cuda-graph", "model", "m", 64, "train_step", 0.1, "bf16"),
            row("reference", "torch-eager", "model", "m", 64, "train_step", 0.3, "bf16"),
            row("reference", "torch-graph", "model", "m", 64, "train_step", 0.12, "bf16"),
            row("custom", "cuda-graph", "model", "m", 64, "train_step", 1.0, "fp32"),
            row("reference", "torch-eager", "model", "m", 64, "train_step", 0.5, "fp32"),
            row("reference", "torch-graph", "model", "m", 64, "train_step", 0.5, "fp32")]
    t = {x["target"]: x for x in evaluate(rows, None)}
    assert t["dense_gemm_4096"]["measured"] == "0.9"
    assert t["gemm_tf32_4096"]["measured"] == "0.8" and t["gemm_tf32_4096"]["met"] == "True"
    assert t["gemm_bf16_4096"]["met"] == "False" and "parity_fail" in t["gemm_bf16_4096"]["note"]
    assert t["conv_tf32_suite_geomean"]["measured"] == "" and "unsupported" in t["conv_tf32_suite_geomean"]["note"]
    assert t["conv_bf16_suite_geomean"]["note"] == "not measured: no rows"
    assert t["train_step_bf16_vs_best_torch"]["measured"] == "1.2"
    assert t["train_step_vs_best_torch"]["measured"] == "0.5"    # fp32 rows only


def test_report_keeps_precisions_apart(tmp_path):
    from harness import report, results, speedups

    rows = []
    for prec, ours, ref in (("fp32", 2.0, 1.0), ("bf16", 1.0, 4.0)):
        for impl, variant, ms in (("custom", "cuda", ours), ("reference", "torch", ref)):
            rows.append(results.Row(impl=impl, variant=variant, device="gpu", workload="dense_M8_N8_K8",
                                    kind="dense", batch=8, phase="forward", precision=prec, median_ms=ms,
                                    parity_ok=True))
    results.write_all(str(tmp_path / "results.csv"), rows)
    df, _ = report.load([str(tmp_path)])
    pairs = speedups.pair(df)
    assert pairs.set_index("workload")["speedup_best"].to_dict() == {"dense_M8_N8_K8": 0.5,
                                                                     "dense_M8_N8_K8 [bf16]": 4.0}
    head = speedups.headline(pairs).set_index("precision")
    assert head["geomean_best"].to_dict() == {"fp32": 0.5, "bf16": 4.0}


def test_jax_reference_is_fp32_only():
    with pytest.raises(ValueError, match="framework 'jax' runs precision 'fp32' only"):
        reference_impl.build("mlp-mnist", framework="jax", precision="bf16")
    s = _suite(precisions=["fp32", "bf16"], phases=["train_step"], variants=["cuda-graph", "torch-eager", "jax-jit"])
    got = {(j.variant, j.precision) for j in s.jobs("gpu") if j.kind == "model"}
    assert ("jax-jit", "fp32") in got and ("jax-jit", "bf16") not in got
    assert ("torch-eager", "bf16") in got and ("cuda-graph", "bf16") in got


def test_jax_rows_at_another_precision_are_unsupported():
    from harness import workloads_jax

    with pytest.raises(workloads_jax.JaxUnavailable, match="strict FP32 only"):
        workloads_jax.check_available("gpu", "tf32")


def test_train_checks_its_precision():
    from harness import train

    runs = train.plan_runs(datasets=["digits"], device="cpu", models=["digits-mlp"], seeds=[0], precision="fp32")
    assert {r.precision for r in runs} == {"fp32"}
    with pytest.raises(train.TrainError, match="precision 'bf16' needs the GPU's tensor cores"):
        train.plan_runs(datasets=["digits"], device="cpu", models=["digits-mlp"], seeds=[0], precision="bf16")
    with pytest.raises(train.TrainError, match="unknown precision 'fp8'"):
        train.plan_runs(datasets=["digits"], device="gpu", models=["digits-mlp"], seeds=[0], precision="fp8")


def test_report_labels_keep_the_precision_tag():
    from harness import labels, tables

    assert labels.workload_label("dense_M64_N128_K784 [tf32]") == "dense 784->128, M=64 [tf32]"
    assert labels.workload_label("mlp-mnist [bf16]") == "mlp-mnist [bf16]"
    assert labels.parse_workload("dense_M64_N128_K784 [tf32]") is None     # no FP32 roofline point
    env = {"precision_flags": reference_impl.precision_flags(),
           "precision_modes": {"fp32": reference_impl.precision_flags("fp32"),
                               "bf16": reference_impl.precision_flags("bf16")}}
    rows = dict(tables.env_rows(env, ["gpu"]))
    assert rows["precision ({} rows)".format("bf16")].endswith("autocast cuda bfloat16")
    assert "precision (fp32 rows)" not in rows


def test_environment_table_names_jax_settings_and_a_resumed_run():
    from harness import tables

    env = {"precision_flags": {"torch.backends.cudnn.benchmark": True, "jax: jax": "0.11.2",
                               "jax: jaxlib": "0.11.2", "jax: XLA_FLAGS": "--xla_gpu_foo=true",
                               "jax: jax.lax.Precision of every dot_general / conv_general_dilated": "HIGHEST"},
           "earlier_calls": [{"timestamp_utc": "2026-12-06T22:08:46+00:00", "commit": "3483bb3512"}],
           "precision_flags_changed": {"jax: XLA_FLAGS": ["", "--xla_gpu_foo=true"]}}
    rows = dict(tables.env_rows(env, ["gpu"]))
    assert rows["JAX"] == "jax 0.11.2, jaxlib 0.11.2, precision HIGHEST, XLA_FLAGS --xla_gpu_foo=true"
    assert rows["earlier calls of this run"] == "2026-12-06 22:08:46 at 3483bb3512"
    assert rows["settings changed between calls"] == "jax: XLA_FLAGS:  -> --xla_gpu_foo=true"
    assert "JAX" not in dict(tables.env_rows({"precision_flags": {"a": 1}}, ["gpu"]))


def _ladder_rows():
    """GPU rows of a dense shape and a model at three / two precisions, ours and PyTorch, random times."""
    from harness import results

    rng = np.random.default_rng(5)
    rows = []
    cases = (("dense", "dense_M96_N80_K72", 96, "forward", ("fp32", "tf32", "bf16"), 96 * 80 * 72 * 2),
             ("dense", "dense_M9_N8_K7", 9, "forward", ("fp32", "bf16"), 9 * 8 * 7 * 2),
             ("model", "lenet-mnist", 64, "train_step", ("fp32", "bf16"), 10**9),
             ("model", "lenet-mnist", 16, "train_step", ("fp32", "bf16"), 25 * 10**7))
    for kind, wl, batch, phase, precs, flops in cases:
        for prec in precs:
            tol = {"fp32": 1e-4, "tf32": 4e-3, "bf16": 3e-2}[prec]
            sides = (("custom", "cuda-graph"), ("reference", "torch-eager"), ("reference", "torch-graph")) \
                if kind == "model" else (("custom", "cuda"), ("reference", "torch"))
            for impl, variant in sides:
                err = float(rng.uniform(0.05, 0.5) * tol)
                rows.append(results.Row(impl=impl, variant=variant, device="gpu", workload=wl, kind=kind,
                                        batch=batch, phase=phase, precision=prec, flops=flops,
                                        median_ms=float(rng.uniform(0.1, 3.0)), parity_rel_err=err,
                                        parity_tol=tol, parity_ok=True, status="ok"))
    return rows


def test_precision_ladder_picks_a_workload_per_kind_and_draws_the_fastest_side(tmp_path):
    from harness import plots, report, results

    rows = _ladder_rows()
    results.write_all(str(tmp_path / "results.csv"), rows)
    df, _ = report.load([str(tmp_path)])
    # dense: the shape in three precisions, not the smaller one in two; model: the larger batch
    assert plots.ladder_workloads(df, "gpu") == [("model", "lenet-mnist", 64, "train_step"),
                                                 ("dense", "dense_M96_N80_K72", 96, "forward")]
    plot = plots.precision_ladder(df, "gpu")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with plots.rc():
        fig = Figure(figsize=plot.size, layout="constrained")
        FigureCanvasAgg(fig)
        plot.draw(fig)
    model_time = fig.axes[0]
    ours, torch = (line.get_ydata() for line in model_time.get_lines()[:2])
    want = {}
    for impl in ("custom", "reference"):
        want[impl] = [min(r.median_ms for r in rows if r.impl == impl and r.workload == "lenet-mnist"
                          and r.batch == 64 and r.precision == p) for p in ("fp32", "bf16")]
    assert list(ours) == pytest.approx(want["custom"]) and list(torch) == pytest.approx(want["reference"])
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == ["FP32", "TF32", "BF16"]
    assert "lenet-mnist (train step, batch 64)" in plot.caption


def test_precision_ladder_needs_two_precisions_on_both_sides(tmp_path):
    from harness import plots, report, results

    rows = [r for r in _ladder_rows() if r.precision == "fp32" or r.impl == "custom"]   # PyTorch: FP32 only
    results.write_all(str(tmp_path / "results.csv"), rows)
    df, _ = report.load([str(tmp_path)])
    assert plots.ladder_workloads(df, "gpu") == []
    assert plots.precision_ladder(df, "gpu") is None
    files = report.render([str(tmp_path)])
    assert not [k for k in files if k.startswith("precision_ladder")]
