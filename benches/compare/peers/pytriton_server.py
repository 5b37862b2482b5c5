"""Triton through PyTriton (nvidia-pytriton==0.7.0): its bundled tritonserver with the Python
backend, each model a Python function running onnxruntime, Triton's dynamic batcher in front
(max_batch_size 32, default delay 0). HTTP on 127.0.0.1:PORT, gRPC on PORT+1, metrics off.

Pitfalls handled here: batching models need non-empty output dims, so the credit model's
`label` is returned as [N, 1]; onnxruntime's int64 arrays go through `.view(np.int64)` for
PyTriton's validator; the caller waits on /v2/models/{m}/ready (/v2/health/ready is 200 before
the models load); the python-backend stub needs the venv's libpython first on
LD_LIBRARY_PATH (set by run.sh). These numbers measure PyTriton's process hops (HTTP → Triton
→ Python backend stub → this process over shared memory), not Triton's native ONNX backend.
Usage: pytriton_server.py REPOSITORY PORT"""

import logging
import sys

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

from common import session

repository, port = sys.argv[1], int(sys.argv[2])
logging.basicConfig(level=logging.WARNING)


def make_infer(sess, input_name, reshape_label):
    names = [o.name for o in sess.get_outputs()]

    @batch
    def infer(**inputs):
        results = sess.run(names, {input_name: inputs[input_name]})
        out = {}
        for name, value in zip(names, results):
            if value.dtype == np.int64:
                value = np.ascontiguousarray(value).view(np.int64)
            if reshape_label and value.ndim == 1:
                value = value.reshape(-1, 1)
            out[name] = value
        return out

    return infer


config = TritonConfig(
    http_address="127.0.0.1", http_port=port, grpc_address="127.0.0.1", grpc_port=port + 1,
    allow_metrics=False, log_verbose=0,
)
with Triton(config=config) as triton:
    model_config = ModelConfig(max_batch_size=32, batcher=DynamicBatcher())
    credit = session(repository, "credit-scoring")
    triton.bind(
        model_name="credit-scoring",
        infer_func=make_infer(credit, "features", True),
        inputs=[Tensor(name="features", dtype=np.float32, shape=(8,))],
        outputs=[
            Tensor(name="label", dtype=np.int64, shape=(1,)),
            Tensor(name="probabilities", dtype=np.float32, shape=(2,)),
        ],
        config=model_config,
        strict=False,
    )
    dense = session(repository, "dense")
    triton.bind(
        model_name="dense",
        infer_func=make_infer(dense, "input", False),
        inputs=[Tensor(name="input", dtype=np.float32, shape=(256,))],
        outputs=[Tensor(name="output", dtype=np.float32, shape=(16,))],
        config=model_config,
        strict=False,
    )
    triton.serve()
