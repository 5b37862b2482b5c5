"""The FastAPI baseline: uvicorn (uvloop, httptools), one process, access log off; the V2
infer route runs onnxruntime inline. Usage: fastapi_server.py REPOSITORY PORT"""

import json
import sys

import uvicorn
from fastapi import FastAPI, Request, Response

from common import RUN_STATS, load_all, run_v2

repository, port = sys.argv[1], int(sys.argv[2])
sessions = load_all(repository)
app = FastAPI()


@app.get("/v2/health/ready")
async def ready():
    return {"ready": True}


@app.get("/stats")
async def stats():
    return RUN_STATS


@app.get("/v2/models/{model}/ready")
async def model_ready(model: str):
    return Response(status_code=200 if model in sessions else 404)


@app.post("/v2/models/{model}/infer")
async def infer(model: str, request: Request):
    body = json.loads(await request.body())
    reply = {"model_name": model, "model_version": "1", "outputs": run_v2(sessions[model], body)}
    if "id" in body:
        reply["id"] = body["id"]
    return Response(content=json.dumps(reply), media_type="application/json")


if __name__ == "__main__":
    uvicorn.run(
        app, host="127.0.0.1", port=port, loop="uvloop", http="httptools",
        access_log=False, log_level="warning",
    )
