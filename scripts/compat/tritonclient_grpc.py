#!/usr/bin/env python3
"""Checks that Triton's official Python gRPC client works against the gateway, unchanged.

Set-up (once):
    python3 -m venv /tmp/tc && /tmp/tc/bin/pip install 'tritonclient[grpc]==2.51.0' numpy
Run (from the repository root, with a gateway serving scripts/compat/gateway.toml):
    cargo run -- --config scripts/compat/gateway.toml
    /tmp/tc/bin/python scripts/compat/tritonclient_grpc.py --grpc 127.0.0.1:8001 --http 127.0.0.1:8000

What it checks, with `tritonclient.grpc` exactly as users call it:
  - health, server metadata, model readiness, model metadata and Triton's model config;
  - every entry of models/tests/reference.json (every datatype, BYTES, 0-d tensors, several
    inputs and outputs, three credit-scoring versions) through `infer`, with raw inputs (the
    client always sends raw) and raw outputs, equal to Python onnxruntime's answers and to the
    gateway's own HTTP answers for the same inputs;
  - requested outputs, request ids, version pins (argument and pin header), the split;
  - errors (unknown model, wrong shape) as InferenceServerException with the HTTP message;
  - the bidirectional stream (start_stream / async_stream_infer).
Exits 0 when every check passes, 1 otherwise (each failure printed).
"""

import argparse
import json
import os
import queue
import sys
import urllib.error
import urllib.request

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAILURES = []


def check(what, condition, detail=""):
    status = "ok  " if condition else "FAIL"
    print(f"{status} {what}" + (f": {detail}" if detail and not condition else ""))
    if not condition:
        FAILURES.append(what)


def np_array(datatype, shape, data):
    if datatype == "BYTES":
        return np.array([s.encode() for s in np.array(data, dtype=object).flatten()], dtype=object).reshape(shape)
    return np.array(data, dtype=triton_to_np_dtype(datatype)).reshape(shape)


def same(expected, got, datatype):
    if expected.shape != got.shape:
        return False
    if datatype in ("FP16", "BF16", "FP32", "FP64"):
        return np.allclose(expected.astype(np.float64), got.astype(np.float64), rtol=1e-4, atol=1e-6)
    return np.array_equal(expected, got)


def http_infer(http, model, version, body):
    url = f"http://{http}/v2/models/{model}/versions/{version}/infer"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def inputs_of(entry):
    inputs = []
    for i in entry["inputs"]:
        t = grpcclient.InferInput(i["name"], i["shape"], i["datatype"])
        t.set_data_from_numpy(np_array(i["datatype"], i["shape"], i["data"]))
        inputs.append(t)
    return inputs


def check_health_and_metadata(client):
    check("server live", client.is_server_live())
    check("server ready", client.is_server_ready())
    meta = client.get_server_metadata(as_json=True)
    check("server metadata names the gateway", meta.get("name") == "gateway", meta)
    check("server metadata lists model_configuration", "model_configuration" in meta.get("extensions", []), meta)
    for model in ("credit-scoring", "dense", "dtypes", "strings", "scalar", "multi_io"):
        check(f"model {model} ready", client.is_model_ready(model))
    check("credit-scoring v3 ready", client.is_model_ready("credit-scoring", "3"))
    check("credit-scoring v9 not ready", not client.is_model_ready("credit-scoring", "9"))

    m = client.get_model_metadata("dtypes", as_json=True)
    types = sorted({i["datatype"] for i in m["inputs"]})
    check("dtypes metadata lists every numeric datatype", len(types) == 12, types)
    m = client.get_model_metadata("credit-scoring", as_json=True)
    check("credit-scoring metadata: versions", m["versions"] == ["1", "2", "3"], m)
    check("credit-scoring metadata: platform", m["platform"] == "onnx_onnxv1", m)
    check(
        "credit-scoring metadata: dynamic dims are -1",
        m["inputs"][0]["shape"] == ["-1", "8"] or m["inputs"][0]["shape"] == [-1, 8],
        m,
    )
    c = client.get_model_config("credit-scoring", as_json=True)["config"]
    check("config: max_batch_size", int(c.get("max_batch_size", 0)) == 32, c)
    check("config: input dims without the batch dim", [int(d) for d in c["input"][0]["dims"]] == [8], c)
    check("config: input data_type", c["input"][0]["data_type"] == "TYPE_FP32", c)
    check("config: dynamic batching delay", int(c["dynamic_batching"]["max_queue_delay_microseconds"]) == 500, c)
    c = client.get_model_config("strings", as_json=True)["config"]
    check("config: BYTES is TYPE_STRING, no batching", c["input"][0]["data_type"] == "TYPE_STRING"
          and int(c.get("max_batch_size", 0)) == 0, c)


def check_reference(client, http):
    with open(os.path.join(ROOT, "models", "tests", "reference.json")) as f:
        entries = json.load(f)
    served = {"credit-scoring", "dense", "dtypes", "strings", "scalar", "multi_io"}
    for entry in entries:
        model, version = entry["model"], str(entry["version"])
        if model not in served:
            continue
        what = f"{model} v{version}"
        result = client.infer(model, inputs_of(entry), model_version=version, request_id=f"ref-{what}")
        response = result.get_response()
        check(f"{what}: answered by v{version}", response.model_version == version, response.model_version)
        check(f"{what}: id echoed", response.id == f"ref-{what}", response.id)
        check(f"{what}: raw outputs", len(response.raw_output_contents) == len(entry["outputs"]))
        reply = http_infer(http, model, version, {"inputs": entry["inputs"]})
        http_outputs = {o["name"]: o for o in reply["outputs"]}
        for out in entry["outputs"]:
            name, datatype = out["name"], out["datatype"]
            got = result.as_numpy(name)
            want = np_array(datatype, out["shape"], out["data"])
            check(f"{what} {name} ({datatype}) equals onnxruntime's", got is not None and same(want, got, datatype),
                  f"{got} vs {want}")
            h = http_outputs[name]
            via_http = np_array(datatype, h["shape"], h["data"])
            check(f"{what} {name} equals the HTTP answer", same(via_http, got, datatype))


def check_routing_and_outputs(client):
    entry = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 8], "data": [0.5] * 8}]}
    seen = {}
    for _ in range(200):
        v = client.infer("credit-scoring", inputs_of(entry)).get_response().model_version
        seen[v] = seen.get(v, 0) + 1
    check("the 80/20 split answers from v1 and v2", set(seen) == {"1", "2"} and 10 <= seen["2"] <= 80, seen)
    pinned = client.infer("credit-scoring", inputs_of(entry), headers={"x-model-version": "3"})
    check("the pin header (metadata) pins", pinned.get_response().model_version == "3")

    multi = {"inputs": [
        {"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]},
        {"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [3.0, 4.0]},
        {"name": "n", "datatype": "INT64", "shape": [1], "data": [41]},
    ]}
    outputs = [grpcclient.InferRequestedOutput("n_plus_one"), grpcclient.InferRequestedOutput("sum.out")]
    r = client.infer("multi_io", inputs_of(multi), outputs=outputs)
    names = [o.name for o in r.get_response().outputs]
    check("requested outputs, in the order asked", names == ["n_plus_one", "sum.out"], names)
    check("n_plus_one", r.as_numpy("n_plus_one").tolist() == [42])
    check("sum.out", r.as_numpy("sum.out").tolist() == [[4.0, 6.0]])


def check_errors(client):
    entry = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 8], "data": [0.5] * 8}]}
    try:
        client.infer("nope", inputs_of(entry))
        check("unknown model raises", False)
    except InferenceServerException as e:
        check("unknown model: NOT_FOUND with the HTTP message",
              "NOT_FOUND" in str(e.status()) and e.message() == "unknown model 'nope'", f"{e.status()} {e.message()}")
    wrong = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [0.5] * 4}]}
    try:
        client.infer("credit-scoring", inputs_of(wrong))
        check("wrong shape raises", False)
    except InferenceServerException as e:
        check("wrong shape: INVALID_ARGUMENT naming the dimension",
              "INVALID_ARGUMENT" in str(e.status()) and "dimension 1 must be 8" in e.message(),
              f"{e.status()} {e.message()}")


def check_stream(client):
    answers = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    entry = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [], "data": [2.0]},
                        {"name": "k", "datatype": "INT64", "shape": [], "data": [3]}]}
    for k in range(5):
        client.async_stream_infer("scalar", inputs_of(entry), request_id=f"s{k}")
    client.async_stream_infer("nope", inputs_of(entry), request_id="bad")
    got = [answers.get(timeout=30) for _ in range(6)]
    client.stop_stream()
    ok = {r.get_response().id for r, e in got if e is None}
    errors = [str(e) for r, e in got if e is not None]
    check("stream: five answers", ok == {f"s{k}" for k in range(5)}, ok)
    check("stream: the failure comes back as an error", len(errors) == 1 and "unknown model 'nope'" in errors[0], errors)


def check_statistics(client):
    stats = client.get_inference_statistics("credit-scoring", "1", as_json=True)["model_stats"]
    check("statistics: one entry for credit-scoring v1", len(stats) == 1 and stats[0]["version"] == "1", stats)
    success = int(stats[0]["inference_stats"]["success"].get("count", 0))
    check("statistics: answered requests counted", success > 0, stats[0]["inference_stats"])
    names = {s["name"] for s in client.get_inference_statistics(as_json=True)["model_stats"]}
    check("statistics: every model", {"credit-scoring", "scalar"} <= names, names)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grpc", default="127.0.0.1:8001", help="the gateway's gRPC address")
    parser.add_argument("--http", default="127.0.0.1:8000", help="the gateway's HTTP address")
    args = parser.parse_args()
    client = grpcclient.InferenceServerClient(url=args.grpc)
    for step in (check_health_and_metadata, lambda c: check_reference(c, args.http), check_routing_and_outputs,
                 check_errors, check_stream, check_statistics):
        try:
            step(client)
        except Exception as e:  # a crash in one group should not hide the others
            check(f"{getattr(step, '__name__', 'step')} ran", False, repr(e))
    print(f"\n{'FAILED: ' + str(len(FAILURES)) if FAILURES else 'all checks passed'}")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
