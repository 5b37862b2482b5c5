"""Helper of scripts/remote/pytriton.sh: a PyTriton server for one ONNX model, and the checks
that compare the gateway (with that server as a remote version) against it.

  pytriton_helper.py serve MODEL.onnx NAME HTTP_PORT GRPC_PORT WORKSPACE
      Triton (nvidia-pytriton==0.7.0, its bundled tritonserver, python backend) serving
      MODEL.onnx through onnxruntime as model NAME version 1, on 127.0.0.1. No batching in
      Triton, so the model's signature is the ONNX one exactly: features FP32 [-1, 8] in,
      label INT64 [-1] and probabilities FP32 [-1, 2] out. WORKSPACE: PyTriton's scratch folder
      (its tritonserver copy, sockets). SIGTERM stops Triton and cleans up.
  pytriton_helper.py pinned GATEWAY TRITON NAME MODEL.onnx N
      N different credit requests: the gateway's answer pinned to version 2 equals PyTriton's
      (and onnxruntime's) within 1e-6, with `x-model-version: 2`.
  pytriton_helper.py split GATEWAY N PERCENT TOLERANCE
      N unpinned requests: the share answered by version 2 is PERCENT +- TOLERANCE.
  pytriton_helper.py after-kill GATEWAY N
      N unpinned requests all answered 200.
GATEWAY and TRITON are host:port. Prints PASS/FAIL lines; exits 1 on any FAIL.
Stdlib + numpy + onnxruntime (the pytriton venv)."""

import http.client
import json
import random
import sys
from concurrent.futures import ThreadPoolExecutor

MODEL = "credit-scoring"
TOLERANCE = 1e-6


def serve(model_file, name, http_port, grpc_port, workspace):
    import logging
    import signal

    import numpy as np
    import onnxruntime as ort
    from pytriton.model_config import ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    logging.basicConfig(level=logging.WARNING)

    def stop(*_):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    sess = ort.InferenceSession(model_file, sess_options=options, providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in sess.get_inputs()}
    outputs = [o.name for o in sess.get_outputs()]
    # Fail loudly if the model is not the one this script expects.
    assert list(inputs) == ["features"] and inputs["features"].type == "tensor(float)", inputs
    assert outputs == ["label", "probabilities"], outputs

    def infer(requests):
        answers = []
        for request in requests:
            label, probabilities = sess.run(outputs, {"features": request["features"]})
            # PyTriton's validator wants numpy's own int64 type object.
            answers.append({"label": np.ascontiguousarray(label).view(np.int64), "probabilities": probabilities})
        return answers

    config = TritonConfig(
        http_address="127.0.0.1", http_port=int(http_port), grpc_address="127.0.0.1", grpc_port=int(grpc_port),
        allow_metrics=False, log_verbose=0,
    )
    with Triton(config=config, workspace=workspace) as triton:
        triton.bind(
            model_name=name,
            model_version=1,
            infer_func=infer,
            inputs=[Tensor(name="features", dtype=np.float32, shape=(-1, 8))],
            outputs=[
                Tensor(name="label", dtype=np.int64, shape=(-1,)),
                Tensor(name="probabilities", dtype=np.float32, shape=(-1, 2)),
            ],
            config=ModelConfig(batching=False),
            strict=True,
        )
        triton.serve()


class Client:
    """One keep-alive HTTP/1.1 connection per thread."""

    def __init__(self, hostport):
        host, port = hostport.rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.conn = None

    def post(self, path, body, headers=None):
        data = json.dumps(body).encode()
        hdrs = {"content-type": "application/json", **(headers or {})}
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
            try:
                self.conn.request("POST", path, data, hdrs)
                resp = self.conn.getresponse()
                text = resp.read()
                return resp.status, {k.lower(): v for k, v in resp.getheaders()}, text
            except (OSError, http.client.HTTPException) as e:
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    return None, {}, repr(e).encode()


def credit_request(seed):
    rng = random.Random(seed)
    data = [round(rng.uniform(-2, 2), 4) for _ in range(8)]
    return {"id": f"r{seed}", "inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 8], "data": data}]}


def report(ok, what):
    print(("PASS " if ok else "FAIL ") + what, flush=True)
    return ok


def outputs_by_name(answer):
    return {o["name"]: o for o in answer["outputs"]}


def compare(a, b):
    """None when the two V2 answers carry the same outputs within TOLERANCE, else why not."""
    a, b = outputs_by_name(a), outputs_by_name(b)
    if sorted(a) != sorted(b):
        return f"output names {sorted(a)} vs {sorted(b)}"
    for name in a:
        x, y = a[name], b[name]
        if x["datatype"] != y["datatype"] or list(x["shape"]) != list(y["shape"]):
            return f"{name}: {x['datatype']}{x['shape']} vs {y['datatype']}{y['shape']}"
        if len(x["data"]) != len(y["data"]) or any(abs(float(p) - float(q)) > TOLERANCE for p, q in zip(x["data"], y["data"])):
            return f"{name}: {x['data']} vs {y['data']}"
    return None


def pinned(gateway, triton, name, model_file, n):
    import numpy as np
    import onnxruntime as ort

    sess = ort.InferenceSession(model_file, providers=["CPUExecutionProvider"])
    gw, tr = Client(gateway), Client(triton)
    failures, equal, headed = [], 0, 0
    for i in range(n):
        req = credit_request(1000 + i)
        status, headers, body = gw.post(f"/v2/models/{MODEL}/infer", req, {"x-model-version": "2"})
        if status != 200:
            failures.append(f"request {i}: gateway {status} {body[:300]!r}")
            continue
        if headers.get("x-model-version") == "2":
            headed += 1
        else:
            failures.append(f"request {i}: gateway header x-model-version={headers.get('x-model-version')!r}")
        tstatus, _, tbody = tr.post(f"/v2/models/{name}/versions/1/infer", req)
        if tstatus != 200:
            failures.append(f"request {i}: pytriton {tstatus} {tbody[:300]!r}")
            continue
        gw_answer, tr_answer = json.loads(body), json.loads(tbody)
        why = compare(gw_answer, tr_answer)
        if why:
            failures.append(f"request {i}: gateway vs pytriton: {why}; request {json.dumps(req)}")
        else:
            equal += 1
        # And PyTriton really runs version 2 (local onnxruntime on the same file).
        label, probs = sess.run(None, {"features": np.asarray(req["inputs"][0]["data"], np.float32).reshape(1, 8)})
        t = outputs_by_name(tr_answer)
        if t["label"]["data"] != label.ravel().tolist() or any(
            abs(p - q) > TOLERANCE for p, q in zip(t["probabilities"]["data"], probs.ravel().tolist())
        ):
            failures.append(f"request {i}: pytriton vs onnxruntime: {t} vs {label} {probs}")
    for f in failures[:10]:
        print("   ", f)
    if len(failures) > 10:
        print(f"    ... {len(failures) - 10} more")
    return report(
        not failures,
        f"pinned: {n} requests pinned to version 2: {equal}/{n} gateway answers equal PyTriton's direct answer "
        f"within {TOLERANCE}, {headed}/{n} with x-model-version: 2",
    )


def many(gateway, n, workers=8):
    def one(chunk):
        c = Client(gateway)
        out = []
        for i in chunk:
            status, headers, body = c.post(f"/v2/models/{MODEL}/infer", credit_request(i), {"x-user-id": f"user-{i}"})
            out.append((i, status, headers.get("x-model-version"), body if status != 200 else b""))
        return out

    chunks = [range(k, n, workers) for k in range(workers)]
    with ThreadPoolExecutor(workers) as pool:
        return [r for part in pool.map(one, chunks) for r in part]


def split(gateway, n, percent, tolerance):
    results = many(gateway, n)
    bad = [r for r in results if r[1] != 200]
    versions = {}
    for r in results:
        versions[r[2]] = versions.get(r[2], 0) + 1
    share = 100.0 * versions.get("2", 0) / n
    for i, status, _, body in bad[:5]:
        print(f"    request {i}: {status} {body[:300]!r}")
    ok = report(not bad, f"split: {n - len(bad)}/{n} unpinned requests answered 200")
    return report(
        abs(share - percent) <= tolerance and ok,
        f"split: version 2 answered {share:.2f}% (want {percent} +- {tolerance}); by x-model-version: {versions}",
    )


def after_kill(gateway, n):
    results = many(gateway, n, workers=4)
    bad = [r for r in results if r[1] != 200]
    versions = {}
    for r in results:
        versions[r[2]] = versions.get(r[2], 0) + 1
    for i, status, _, body in bad[:10]:
        print(f"    request {i}: {status} {body[:300]!r}")
    return report(not bad, f"after-kill: {n - len(bad)}/{n} unpinned requests answered 200 with PyTriton dead; by x-model-version: {versions}")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "serve":
        serve(*args)
        return 0
    if cmd == "pinned":
        ok = pinned(args[0], args[1], args[2], args[3], int(args[4]))
    elif cmd == "split":
        ok = split(args[0], int(args[1]), float(args[2]), float(args[3]))
    elif cmd == "after-kill":
        ok = after_kill(args[0], int(args[1]))
    else:
        sys.exit(f"unknown command {cmd}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
