"""Mosec (PyPI `mosec`: a Rust HTTP core, Python worker processes, dynamic batching) serving the
benchmark models on the V2 infer routes, one worker process per model with one ONNX Runtime
thread. Batches: credit-scoring up to 32 requests, dense up to 8 (the gateway's own caps), each
waiting at most 1 ms for company (Mosec's `max_wait_time` is in whole milliseconds). A batch is
stacked along dim 0, run once, and split back.
Usage: mosec_server.py REPOSITORY PORT"""

import json
import os
import sys

import numpy as np
from mosec import Server, Worker

from common import NUMPY_TO_V2, V2_TO_NUMPY, session

# Worker processes are spawned and import this file again: they find the repository in the
# environment the server sets before it starts them.
REPOSITORY_ENV = "GWBENCH_MOSEC_REPOSITORY"


class Model(Worker):
    model = ""

    def __init__(self):
        super().__init__()
        self.sess = session(os.environ[REPOSITORY_ENV], self.model)
        self.names = [o.name for o in self.sess.get_outputs()]

    def forward(self, requests):
        first = requests[0]["inputs"]
        rows = [r["inputs"][0]["shape"][0] for r in requests]
        feed = {
            spec["name"]: np.concatenate(
                [
                    np.asarray(r["inputs"][k]["data"], dtype=V2_TO_NUMPY[spec["datatype"]]).reshape(
                        r["inputs"][k]["shape"]
                    )
                    for r in requests
                ]
            )
            for k, spec in enumerate(first)
        }
        results = self.sess.run(self.names, feed)
        answers, start = [], 0
        for n in rows:
            outputs = []
            for name, value in zip(self.names, results):
                part = value[start:start + n]
                outputs.append({"name": name, "datatype": NUMPY_TO_V2[part.dtype], "shape": list(part.shape),
                                "data": part.ravel().tolist()})
            answers.append({"model_name": self.model, "model_version": "1", "outputs": outputs})
            start += n
        return answers

    def serialize(self, data):
        # Mosec's default indents its JSON; compact, as every other server here answers.
        return json.dumps(data, separators=(",", ":")).encode()


class Credit(Model):
    model = "credit-scoring"


class Dense(Model):
    model = "dense"


if __name__ == "__main__":
    os.environ[REPOSITORY_ENV] = os.path.abspath(sys.argv[1])
    # Mosec parses its own flags from the command line.
    sys.argv = [sys.argv[0], "--address", "127.0.0.1", "--port", sys.argv[2], "--log-level", "warning"]
    server = Server()
    server.append_worker(Credit, num=1, max_batch_size=32, max_wait_time=1, route="/v2/models/credit-scoring/infer")
    server.append_worker(Dense, num=1, max_batch_size=8, max_wait_time=1, route="/v2/models/dense/infer")
    server.run()
