"""What every Python peer shares: the ONNX sessions of the benchmark models (one intra-op
thread, one inter-op thread, as the gateway's defaults) and V2 JSON in and out.

Stdlib, numpy and onnxruntime only, so each peer's venv can import it."""

import os
import time

import numpy as np
import onnxruntime as ort

MODELS = ("credit-scoring", "dense")

V2_TO_NUMPY = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}
NUMPY_TO_V2 = {
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
    np.dtype(np.int64): "INT64",
    np.dtype(np.int32): "INT32",
}


def session(repository, model, version=1):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    path = os.path.join(repository, model, str(version), "model.onnx")
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


def load_all(repository):
    return {name: session(repository, name) for name in MODELS}


# Time spent inside sess.run, for the servers that report it (the FastAPI peer's GET /stats):
# the control for the gateway's ONNX Runtime time per batch, measured under the same load.
RUN_STATS = {"runs": 0, "seconds": 0.0}


def run_v2(sess, request):
    """A decoded V2 JSON request (a dict) -> the `outputs` list of a V2 JSON response."""
    feed = {
        i["name"]: np.asarray(i["data"], dtype=V2_TO_NUMPY[i["datatype"]]).reshape(i["shape"])
        for i in request["inputs"]
    }
    names = [o.name for o in sess.get_outputs()]
    started = time.perf_counter()
    results = sess.run(names, feed)
    RUN_STATS["seconds"] += time.perf_counter() - started
    RUN_STATS["runs"] += 1
    return [
        {
            "name": name,
            "datatype": NUMPY_TO_V2[value.dtype],
            "shape": list(value.shape),
            "data": value.ravel().tolist(),
        }
        for name, value in zip(names, results)
    ]
