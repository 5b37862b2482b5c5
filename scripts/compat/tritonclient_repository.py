"""Triton's model repository extension with the official clients (tritonclient 2.51.0, HTTP and
gRPC) against a gateway serving a Triton repository in explicit control mode, started by
run_repository.sh with credit-scoring loaded and dense not. Prints one line per check; exits 1
when any failed."""

import argparse
import sys

import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

failures = []


def check(name, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + name + ("" if ok else f": {detail}"))
    if not ok:
        failures.append(name)


def index(client, grpc):
    if grpc:
        return {(m.name, m.version, m.state) for m in client.get_model_repository_index().models}
    return {(m["name"], m.get("version", ""), m["state"]) for m in client.get_model_repository_index()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--http", required=True)
    ap.add_argument("--grpc", required=True)
    args = ap.parse_args()
    http = httpclient.InferenceServerClient(url=args.http)
    grpc = grpcclient.InferenceServerClient(url=args.grpc)

    for client, name in ((http, "http"), (grpc, "grpc")):
        got = index(client, name == "grpc")
        check(f"{name}: index lists credit-scoring v3 READY", ("credit-scoring", "3", "READY") in got, got)
        check(f"{name}: index lists dense, not loaded", any(m[0] == "dense" and m[2] == "UNAVAILABLE" for m in got), got)

    http.load_model("dense")
    check("http: load_model(dense) then ready", http.is_model_ready("dense") and grpc.is_model_ready("dense"))
    config = http.get_model_config("dense")
    check("http: dense's auto-completed config batches (max_batch_size 4)", config.get("max_batch_size") == 4, config)
    grpc.unload_model("dense")
    check("grpc: unload_model(dense) then not ready", not http.is_model_ready("dense"))
    grpc.load_model("dense")
    check("grpc: load_model(dense) then ready", grpc.is_model_ready("dense"))
    gconfig = grpc.get_model_config("dense", as_json=True)["config"]
    check("grpc: dense's config max_batch_size 4", int(gconfig.get("max_batch_size", 0)) == 4, gconfig)

    try:
        http.load_model("no-such-model")
        check("http: loading a model the repository lacks is refused", False, "no error")
    except InferenceServerException as e:
        check("http: loading a model the repository lacks is refused", "failed to load" in str(e), e)
    try:
        grpc.load_model("no-such-model")
        check("grpc: loading a model the repository lacks is refused", False, "no error")
    except InferenceServerException as e:
        check("grpc: loading a model the repository lacks is refused", "failed to load" in str(e), e)

    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
