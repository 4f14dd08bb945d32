"""The tensor-core convolution's index arithmetic, checked on the CPU (no GPU; skipped only without nvcc).

``conv_tc_gather_check.cu`` includes ``kernels/conv_implicit_gemm_tc.cu`` and, on the host, runs every
phase of ten odd layers (strides 1-3, non-square kernels and padding, 1x1 with stride) through the
kernel's own loaders and epilogues for three tile shapes, against a direct float64 convolution. It also
checks that every tile element is copied exactly once, that nothing outside an operand is read, and that
the multiply-and-shift division (TcFastDiv) equals integer division.
"""
from __future__ import annotations

import os
import subprocess

import pytest

from .test_nvcc import ROOT, _nvcc

CHECK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "conv_tc_gather_check.cu")
KERNEL_DIR = os.path.join(ROOT, "custom_impl", "kernels")


@pytest.fixture(scope="module")
def checker(tmp_path_factory):
    exe = tmp_path_factory.mktemp("tc_gather") / "check"
    cmd = [_nvcc(), "-std=c++17", "-O1", "-arch=sm_90", "-I", KERNEL_DIR, "-o", str(exe), CHECK]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"nvcc failed on {os.path.basename(CHECK)}:\n{proc.stdout}{proc.stderr}"
    return str(exe)


@pytest.mark.skipif(_nvcc() is None, reason="nvcc not found (on PATH or /usr/local/cuda/bin)")
def test_conv_tc_loaders_and_epilogues_compute_the_direct_convolution(checker):
    proc = subprocess.run([checker], capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and out.rstrip().endswith(", 0 bad"), out
    assert "checked 110 cases" in out, f"expected 10 layers x 3 tiles x 3 phases and 20 divisors:\n{out}"
