"""Python onnxruntime's own run time: one session (one intra-op thread, as every peer), the same
payload rows as the benchmarks, `sess.run` timed back to back. The control for the gateway's
per-batch run time. Prints one JSON object.
Usage: ort_python.py REPOSITORY MODEL BATCH SECONDS"""

import json
import sys
import time

import numpy as np

from common import session

repository, model, batch, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
sess = session(repository, model)
spec = sess.get_inputs()[0]
rng = np.random.default_rng(1)
x = rng.uniform(-1, 1, (batch, spec.shape[1])).astype(np.float32)
names = [o.name for o in sess.get_outputs()]
for _ in range(200):
    sess.run(names, {spec.name: x})
runs, started = 0, time.perf_counter()
while time.perf_counter() - started < seconds:
    sess.run(names, {spec.name: x})
    runs += 1
elapsed = time.perf_counter() - started
print(json.dumps({"model": model, "batch": batch, "runs": runs, "run_us": elapsed / runs * 1e6}))
