"""KServe's Python ModelServer (kserve==0.21.0) serving both models through onnxruntime.

Pitfalls handled here: it binds 0.0.0.0 unconditionally (uvicorn.Config is wrapped to bind
127.0.0.1; gRPC, which binds [::], is off); a response without an id fails its pydantic
validation (one is generated); per-request latency and access logs are off.
Usage: kserve_server.py REPOSITORY PORT"""

import logging
import sys
import uuid

import uvicorn

_Config = uvicorn.Config


class LoopbackConfig(_Config):
    def __init__(self, *args, **kwargs):
        kwargs["host"] = "127.0.0.1"
        kwargs["access_log"] = False
        super().__init__(*args, **kwargs)


uvicorn.Config = LoopbackConfig

import kserve  # noqa: E402  (after the patch: kserve reads uvicorn.Config at start)
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer  # noqa: E402

from common import NUMPY_TO_V2, load_all  # noqa: E402


class OnnxModel(Model):
    def __init__(self, name, sess):
        super().__init__(name)
        self.sess = sess
        self.names = [o.name for o in sess.get_outputs()]
        self.ready = True

    async def predict(self, payload: InferRequest, headers=None, response_headers=None):
        feed = {i.name: i.as_numpy() for i in payload.inputs}
        results = self.sess.run(self.names, feed)
        outputs = []
        for name, value in zip(self.names, results):
            out = InferOutput(name=name, shape=list(value.shape), datatype=NUMPY_TO_V2[value.dtype])
            out.set_data_from_numpy(value, binary_data=False)
            outputs.append(out)
        return InferResponse(
            response_id=payload.id or str(uuid.uuid4()),
            model_name=self.name,
            model_version="1",
            infer_outputs=outputs,
        )


if __name__ == "__main__":
    repository, port = sys.argv[1], int(sys.argv[2])
    models = [OnnxModel(name, sess) for name, sess in load_all(repository).items()]
    server = ModelServer(
        http_port=port, enable_grpc=False, enable_latency_logging=False, workers=1,
        enable_docs_url=False,
    )
    for name in ("kserve", "kserve.trace", "uvicorn.access", "uvicorn.error"):
        logging.getLogger(name).setLevel(logging.WARNING)
    server.start(models)
