#!/usr/bin/env python3
"""Computes the reference outputs the Rust adapters are checked against
(tests/fixtures/models/reference.json), with Python ONNX Runtime on real frames.

Usage: .venv/bin/python models/make_reference.py

Frames are decoded with gst-launch-1.0 exactly as tests/models_support decodes them. The
pre-processing below repeats src/models/preprocess.rs operation for operation (f64 sampling
coordinates, f32 blending in the same order), so both sides feed identical tensors. Stored per
case: the sha256 of the decoded frame, the input size, for every raw output its length, sum
and a strided sample of values, and the number of detections above the score threshold after
the same decoding and non-maximum suppression.
"""
import hashlib
import json
import os
import subprocess
import tempfile

import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOOTAGE = os.path.join(ROOT, "data", "footage")
MIN_SCORE = 0.3
SAMPLES = 64


def decode(name, frame, width, height):
    """Frame `frame` (0-based) of data/footage/NAME as packed RGB bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        # Videos stop after the wanted frame; a still image is a single buffer.
        limit = [] if name.endswith(".jpg") else ["identity", f"eos-after={frame + 2}", "!"]
        subprocess.run(
            ["gst-launch-1.0", "-q", "filesrc", f"location={os.path.join(FOOTAGE, name)}", "!", "decodebin",
             "!", "videoconvert", "!", "video/x-raw,format=RGB", "!", *limit,
             "multifilesink", f"location={tmp}/f%05d.rgb"], check=True)
        raw = open(os.path.join(tmp, f"f{frame:05d}.rgb"), "rb").read()
    stride = (width * 3 + 3) // 4 * 4
    rows = np.frombuffer(raw, np.uint8).reshape(height, stride)[:, : width * 3]
    return rows.reshape(height, width, 3).copy()


def taps(start, length, out, limit):
    scale = length / out
    s = np.clip(start + (np.arange(out, dtype=np.float64) + 0.5) * scale - 0.5, 0.0, limit - 1)
    i0 = np.floor(s)
    i1 = np.minimum(i0.astype(np.int64) + 1, limit - 1)
    return i0.astype(np.int64), i1, (s - i0).astype(np.float32)


def resize(img, region, out_w, out_h, mean, std):
    h, w, _ = img.shape
    x0, x1, fx = taps(region[0], region[2], out_w, w)
    y0, y1, fy = taps(region[1], region[3], out_h, h)
    f = img.astype(np.float32)
    wx0, wx1 = (np.float32(1) - fx)[None, :, None], fx[None, :, None]
    wy0, wy1 = (np.float32(1) - fy)[:, None, None], fy[:, None, None]
    top = f[y0][:, x0] * wx0 + f[y0][:, x1] * wx1
    bottom = f[y1][:, x0] * wx0 + f[y1][:, x1] * wx1
    v = top * wy0 + bottom * wy1
    return ((v - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).astype(np.float32)


def iou(a, b):
    iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0)
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return 0 if union <= 0 else inter / union


def nms(dets, thr):
    dets = sorted(dets, key=lambda d: -d[4])
    kept = []
    for d in dets:
        if all(k[5] != d[5] or iou(k, d) <= thr for k in kept):
            kept.append(d)
    return kept


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sample(arr):
    flat = arr.astype(np.float32).ravel()
    step = max(1, len(flat) // SAMPLES)
    return {"len": int(len(flat)), "sum": float(flat.astype(np.float64).sum()), "step": step,
            "values": [float(v) for v in flat[::step][:SAMPLES]]}


def session(name):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(os.path.join(ROOT, "models", name), so, providers=["CPUExecutionProvider"])


def out_by_shape(sess, outs, shape):
    for o, v in zip(sess.get_outputs(), outs):
        if list(v.shape) == shape:
            return v
    raise KeyError(shape)


def case(model, footage, frame, img, sess, feed, outs, names, count, extra=None):
    c = {"model": model, "footage": footage, "frame": frame, "width": img.shape[1], "height": img.shape[0],
         "frame_sha256": hashlib.sha256(img.tobytes()).hexdigest(),
         "outputs": [dict(name=n, **sample(o)) for n, o in zip(names, outs)], "count": count}
    if extra:
        c.update(extra)
    return c


def main():
    cases = []
    vt = [decode("vtest.avi", f, 768, 576) for f in (0, 40, 80)]
    full = lambda img: (0.0, 0.0, float(img.shape[1]), float(img.shape[0]))

    s = session("centernet.onnx")
    for f, img in zip((0, 40, 80), vt):
        x = resize(img, full(img), 512, 512, [0] * 3, [1] * 3)[None]
        det = s.run(["tower_0/detections"], {"tower_0/images:0": x})[0]
        sx, sy = img.shape[1] / 512, img.shape[0] / 512
        d = [(r[0] * sx, r[1] * sy, r[2] * sx, r[3] * sy, r[4], int(max(r[5], 0))) for r in det[0] if r[4] >= MIN_SCORE]
        cases.append(case("centernet", "vtest.avi", f, img, s, None, [det], ["tower_0/detections"], len(nms(d, 0.5))))

    s = session("nanodet.onnx")
    for f, img in zip((0, 40, 80), vt):
        x = resize(img, full(img), 416, 416, [0] * 3, [255] * 3).transpose(2, 0, 1)[None]
        outs = s.run(None, {"input_1:0": x})
        names, raws, d = [], [], []
        sx, sy = img.shape[1] / 416, img.shape[0] / 416
        for stride in (8, 16, 32):
            n = (416 // stride) ** 2
            sc = out_by_shape(s, outs, [1, n, 80])[0]
            bx = out_by_shape(s, outs, [1, n, 44])[0]
            names += [f"scores{stride}", f"boxes{stride}"]
            raws += [sc, bx]
            cols = 416 // stride
            for cell in range(n):
                cls = int(np.argmax(sc[cell]))
                score = sc[cell, cls]
                if score < MIN_SCORE:
                    continue
                p = softmax(bx[cell].reshape(4, 11))
                dist = (p * np.arange(11, dtype=np.float32)).sum(axis=1) * stride
                ax, ay = (cell % cols) * stride, (cell // cols) * stride
                d.append(((ax - dist[0]) * sx, (ay - dist[1]) * sy, (ax + dist[2]) * sx, (ay + dist[3]) * sy, score, cls))
        cases.append(case("nanodet", "vtest.avi", f, img, s, None, raws, names, len(nms(d, 0.5))))

    s = session("movenet-multipose.onnx")
    for f, img in zip((0, 40, 80), vt):
        x = np.round(resize(img, full(img), 768, 576, [0] * 3, [1] * 3)).astype(np.int32)[None]
        out = s.run(None, {"input": x})[0]
        cases.append(case("movenet-multipose", "vtest.avi", f, img, s, None, [out], ["output_0"],
                          int((out[0, :, 55] >= MIN_SCORE).sum())))

    car = decode("carphone_pristine.mp4", 0, 176, 144)
    s = session("blazeface.onnx")
    x = resize(car, full(car), 256, 256, [127.5] * 3, [127.5] * 3)[None]
    outs = s.run(None, {"input:0": x})
    raws, names, d = [], [], []
    for stride, per in ((16, 2), (32, 6)):
        n = (256 // stride) ** 2 * per
        sc = out_by_shape(s, outs, [1, n, 1])[0, :, 0]
        rg = out_by_shape(s, outs, [1, n, 16])[0]
        raws += [sc, rg]
        names += [f"scores{stride}", f"regressors{stride}"]
        cols = 256 // stride
        for i in range(n):
            score = 1 / (1 + np.exp(-np.float64(sc[i])))
            if score < MIN_SCORE:
                continue
            cell = i // per
            ax, ay = (cell % cols + 0.5) * stride, (cell // cols + 0.5) * stride
            cx, cy, w, h = rg[i, 0] + ax, rg[i, 1] + ay, rg[i, 2], rg[i, 3]
            k = 176 / 256, 144 / 256
            d.append(((cx - w / 2) * k[0], (cy - h / 2) * k[1], (cx + w / 2) * k[0], (cy + h / 2) * k[1], score, 0))
    faces = nms(d, 0.3)
    cases.append(case("blazeface", "carphone_pristine.mp4", 0, car, s, None, raws, names, len(faces)))

    img = decode("squirrel_cls.jpg", 0, 535, 426)
    s = session("efficientnet-lite0.onnx")
    x = resize(img, full(img), 224, 224, [127] * 3, [128] * 3).transpose(2, 0, 1)[None]
    logits, feats = s.run(["logits", "features"], {"input": x})
    cases.append(case("efficientnet-lite0", "squirrel_cls.jpg", 0, img, s, None, [logits, feats],
                      ["logits", "features"], None, {"top1": int(np.argmax(logits[0]))}))

    with open(os.path.join(ROOT, "tests", "fixtures", "models", "reference.json"), "w") as fh:
        json.dump({"format_version": 1, "min_score": MIN_SCORE, "onnxruntime": ort.__version__, "cases": cases}, fh, indent=1)
        fh.write("\n")
    for c in cases:
        print(c["model"], c["footage"], c["frame"], "count", c["count"], c.get("top1", ""))


if __name__ == "__main__":
    main()
