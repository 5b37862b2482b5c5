"""Writes an MLServer (mlserver==1.7.1) model folder for both models under WORKDIR, then runs
`mlserver start` on it. Settings: 127.0.0.1 for HTTP and gRPC (its default is 0.0.0.0), no
metrics server (default port 8082), `debug: false` (no per-request access log); the custom
runtime in mlserver_runtime.py. Its default of one parallel inference worker process is kept.
Usage: mlserver_server.py REPOSITORY PORT WORKDIR   (gRPC on PORT+1)"""

import json
import os
import sys

from common import MODELS

repository, port, workdir = os.path.abspath(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
os.makedirs(workdir, exist_ok=True)
settings = {
    "host": "127.0.0.1",
    "http_port": port,
    "grpc_port": port + 1,
    "metrics_endpoint": None,
    "debug": False,
    "logging_settings": None,
}
with open(os.path.join(workdir, "settings.json"), "w") as f:
    json.dump(settings, f)
for name in MODELS:
    folder = os.path.join(workdir, name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "model-settings.json"), "w") as f:
        json.dump(
            {
                "name": name,
                "implementation": "mlserver_runtime.OnnxRuntime",
                "parameters": {"uri": os.path.join(repository, name, "1", "model.onnx"), "version": "1"},
            },
            f,
        )
here = os.path.dirname(os.path.abspath(__file__))
os.environ["PYTHONPATH"] = here + os.pathsep + os.environ.get("PYTHONPATH", "")
mlserver = os.path.join(os.path.dirname(sys.executable), "mlserver")
os.execv(mlserver, [mlserver, "start", workdir])
