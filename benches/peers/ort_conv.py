#!/usr/bin/env python3
"""Times ONNX Runtime's Conv (MLAS) on the layer suite, so convgemm can be compared in one run.

Setup once:   python3 -m venv .venv-peers && .venv-peers/bin/pip install onnxruntime onnx numpy
Run:          .venv-peers/bin/python ../shared/peers/ort_conv.py --threads 1 [--layers benches/layers.json] [--json out.json]

Prints one line per layer: name, median ms, GFLOP/s (bias included, f32, NCHW), and writes the
medians as JSON if asked. Each layer: warm-up, then 9 samples of >= 25 ms each; median.
After a 2-thread run the ONNX Runtime pool keeps spinning for tens of ms: let the machine go
idle before timing the next program.
"""
import argparse
import json
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper


def out_hw(l):
    ho = (l["h"] + l["pad_top"] + l["pad_bottom"] - l["dilation_h"] * (l["kh"] - 1) - 1) // l["stride_h"] + 1
    wo = (l["w"] + l["pad_left"] + l["pad_right"] - l["dilation_w"] * (l["kw"] - 1) - 1) // l["stride_w"] + 1
    return ho, wo


def session(l, threads, rng):
    w = rng.uniform(-1, 1, (l["c_out"], l["c_in"] // l["groups"], l["kh"], l["kw"])).astype(np.float32)
    b = rng.uniform(-1, 1, (l["c_out"],)).astype(np.float32)
    node = helper.make_node(
        "Conv", ["x", "w", "b"], ["y"], kernel_shape=[l["kh"], l["kw"]], group=l["groups"],
        strides=[l["stride_h"], l["stride_w"]], dilations=[l["dilation_h"], l["dilation_w"]],
        pads=[l["pad_top"], l["pad_left"], l["pad_bottom"], l["pad_right"]])
    graph = helper.make_graph(
        [node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [l["n"], l["c_in"], l["h"], l["w"]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel()),
                     helper.make_tensor("b", TensorProto.FLOAT, b.shape, b.ravel())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--layers", default="benches/layers.json")
    ap.add_argument("--json")
    args = ap.parse_args()
    rng = np.random.default_rng(7)
    results = {}
    print(f"onnxruntime {ort.__version__}, {args.threads} thread(s)")
    for l in json.load(open(args.layers)):
        sess = session(l, args.threads, rng)
        ho, wo = out_hw(l)
        x = rng.uniform(-1, 1, (l["n"], l["c_in"], l["h"], l["w"])).astype(np.float32)
        y = np.empty((l["n"], l["c_out"], ho, wo), dtype=np.float32)
        io = sess.io_binding()
        io.bind_ortvalue_input("x", ort.OrtValue.ortvalue_from_numpy(x))
        io.bind_ortvalue_output("y", ort.OrtValue.ortvalue_from_numpy(y))
        for _ in range(3):
            sess.run_with_iobinding(io)
        t = time.perf_counter()
        sess.run_with_iobinding(io)
        reps = max(1, int(0.025 / max(time.perf_counter() - t, 1e-7)))
        samples = []
        for _ in range(9):
            t = time.perf_counter()
            for _ in range(reps):
                sess.run_with_iobinding(io)
            samples.append((time.perf_counter() - t) / reps)
        ms = sorted(samples)[4] * 1e3
        flops = 2 * l["n"] * l["c_out"] * ho * wo * (l["c_in"] // l["groups"]) * l["kh"] * l["kw"]
        results[l["name"]] = ms
        print(f"{l['name']:<24} {ms:10.4f} ms {flops / ms / 1e6:8.1f} GFLOP/s")
    if args.json:
        json.dump({"onnxruntime": ort.__version__, "threads": args.threads, "median_ms": results},
                  open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
