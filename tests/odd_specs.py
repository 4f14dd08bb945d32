"""Odd model specs (batch 1, 7, 33; sizes not multiples of 8; strides, paddings and kernels the zoo lacks;
both losses), shared by the CPU and GPU parity tests."""
from __future__ import annotations

def _spec(name, input_shape, layers, num_classes=5, loss="softmax_cross_entropy"):
    return {"name": name, "input_shape": list(input_shape), "num_classes": num_classes, "loss": loss,
            "layers": layers}


def _conv(k, kernel, stride=1, padding=0, bias=True):
    return {"type": "conv2d", "out_channels": k, "kernel_size": kernel, "stride": stride, "padding": padding,
            "bias": bias}


FLAT = {"type": "flatten"}
RELU = {"type": "relu"}

# (spec dict, batch): each one exercises something the zoo does not.
ODD = [
    (_spec("dense-37-13", [37], [{"type": "dense", "units": 13}, {"type": "tanh"},
                                 {"type": "dense", "units": 5}]), 7),
    (_spec("dense-1000-37", [1000], [{"type": "dense", "units": 37}, RELU, {"type": "dense", "units": 11}],
           num_classes=11), 33),
    (_spec("dense-nobias-batch1", [19], [{"type": "dense", "units": 23, "bias": False}, {"type": "sigmoid"},
                                         {"type": "dense", "units": 3}], num_classes=3), 1),
    (_spec("bce-odd", [29], [{"type": "dense", "units": 17}, RELU, {"type": "dense", "units": 9},
                             {"type": "tanh"}, {"type": "dense", "units": 1}],
           num_classes=2, loss="sigmoid_binary_cross_entropy"), 33),
    (_spec("conv-k1-s1-p0", [3, 13, 17], [_conv(5, 1), RELU, FLAT, {"type": "dense", "units": 5}]), 7),
    (_spec("conv-k3-s2-p1", [3, 13, 17], [_conv(7, 3, stride=2, padding=1), RELU, FLAT,
                                          {"type": "dense", "units": 5}]), 7),
    (_spec("conv-k5-s1-p2", [5, 13, 17], [_conv(3, 5, padding=2), {"type": "tanh"},
                                          {"type": "maxpool2d", "kernel_size": 2}, FLAT,
                                          {"type": "dense", "units": 5}]), 7),
    (_spec("conv-k7-s2-p0", [1, 13, 17], [_conv(9, 7, stride=2), {"type": "sigmoid"}, FLAT,
                                          {"type": "dense", "units": 5}]), 33),
    (_spec("conv-k3x5-rect", [3, 13, 17], [_conv(5, [3, 5], stride=[2, 1], padding=[1, 2], bias=False), RELU,
                                           {"type": "avgpool2d", "kernel_size": [2, 3]}, FLAT,
                                           {"type": "dense", "units": 5}]), 1),
    (_spec("pool-overlap", [3, 13, 17], [_conv(5, 3, padding=1), RELU,
                                         {"type": "maxpool2d", "kernel_size": 3, "stride": 2},
                                         _conv(7, 3), RELU, {"type": "avgpool2d", "kernel_size": 3, "stride": 2},
                                         FLAT, {"type": "dense", "units": 13}, RELU,
                                         {"type": "dense", "units": 5}]), 7),
    (_spec("conv-bce", [3, 13, 17], [_conv(3, 3, stride=2, padding=2), RELU, FLAT,
                                     {"type": "dense", "units": 1}],
           num_classes=2, loss="sigmoid_binary_cross_entropy"), 7),
]
