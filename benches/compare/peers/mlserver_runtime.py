"""A custom MLServer runtime running an ONNX file with onnxruntime (one intra-op thread).
Outputs are built by hand: MLServer's NumpyCodec would turn a shape [N] output into [N, 1]."""

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput

from common import NUMPY_TO_V2
import onnxruntime as ort


class OnnxRuntime(MLModel):
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        uri = self.settings.parameters.uri
        self.sess = ort.InferenceSession(uri, sess_options=options, providers=["CPUExecutionProvider"])
        self.names = [o.name for o in self.sess.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feed = {i.name: NumpyCodec.decode_input(i) for i in payload.inputs}
        results = self.sess.run(self.names, feed)
        outputs = [
            ResponseOutput(
                name=name,
                shape=list(value.shape),
                datatype=NUMPY_TO_V2[np.dtype(value.dtype)],
                data=value.ravel().tolist(),
            )
            for name, value in zip(self.names, results)
        ]
        return InferenceResponse(
            id=payload.id, model_name=self.name, model_version="1", outputs=outputs
        )
