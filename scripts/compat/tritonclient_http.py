#!/usr/bin/env python3
"""The official Triton HTTP client (`tritonclient[http]`), used unchanged against a running gateway.

Checks, each printed as PASS/FAIL with its reason, then one closing line `N passed, N failed`:
  - server live / ready / metadata, model ready / metadata / config (unpinned and pinned);
  - infer on every entry of models/tests/reference.json, each in many client modes:
      inputs binary or JSON  x  outputs: none requested (request-level binary_data_output),
      all requested binary, all requested JSON, mixed per output, and one output only;
    every time pinned to the reference's version (`model_version`), and unpinned when the
    version is the primary; the request id must come back, `model_version` must be right,
    and every output must equal the reference (floats within 1e-4 relative);
  - the async clients: `async_infer` (gevent pool, concurrent, through the batching queue) and
    `tritonclient.http.aio` (aiohttp);
  - errors the client must surface as InferenceServerException with the gateway's status and
    message: unknown model (404), unknown version (404), wrong input name / datatype (422),
    unknown requested output (422), a model failing at run time (500), and the gateway still
    serving after each.
Optional Triton features that SPEC.md does not promise (request/response compression,
repository index, statistics) are probed and reported as INFO; they never fail the run.

Usage: tritonclient_http.py --url 127.0.0.1:48080 [--reference models/tests/reference.json]
Exit status: 0 when every check passed, 1 otherwise.
"""

import argparse
import asyncio
import json
import sys
import traceback

import numpy as np
import tritonclient.http as httpclient
import tritonclient.http.aio as aioclient
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

# Primary versions in scripts/compat/compat.toml: unpinned requests must be answered by these.
PRIMARY = {"credit-scoring": 1}
# Models served by compat.toml, with the versions that may be pinned.
SERVED = {
    "credit-scoring": [1, 2, 3],
    "dense": [1],
    "scalar": [1],
    "strings": [1],
    "dtypes": [1],
    "multi_io": [1],
    "control_flow": [1],
    "fixed": [1],
    "slow": [1],
    "mirror": [1, 3],
    "embed": [1],
}
# Models with dynamic batching in compat.toml: a request may carry at most this many rows.
MAX_BATCH = {"dense": 8}
RTOL = 1e-4
ATOL = 1e-6

results = []  # (status, name, detail): status in PASS, FAIL, INFO
QUIET = False


def record(status, name, detail=""):
    results.append((status, name, detail))
    if QUIET and status == "PASS":
        return
    line = f"{status:4} {name}"
    if detail:
        line += f"  -- {detail}"
    print(line, flush=True)


def check(name, fn):
    """Runs fn(); a falsy-free return or no exception is a pass. fn may return a detail string."""
    try:
        detail = fn()
        record("PASS", name, detail or "")
        return True
    except AssertionError as e:
        record("FAIL", name, str(e) or "assertion failed")
    except InferenceServerException as e:
        record("FAIL", name, f"InferenceServerException status={e.status()} msg={e.message()}")
    except Exception as e:  # noqa: BLE001 - report any client-side breakage as a failure
        record("FAIL", name, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}")
    return False


def info(name, fn):
    try:
        record("INFO", name, fn() or "works")
    except InferenceServerException as e:
        record("INFO", name, f"not supported: status={e.status()} msg={e.message()}")
    except Exception as e:  # noqa: BLE001
        record("INFO", name, f"not supported: {type(e).__name__}: {e}")


# ---- reference data ----


def np_from_reference(t):
    dtype = triton_to_np_dtype(t["datatype"])
    if t["datatype"] == "BYTES":
        arr = np.array([s.encode("utf-8") for s in t["data"]], dtype=np.object_)
    else:
        arr = np.array(t["data"], dtype=dtype)
    return arr.reshape(t["shape"])


def make_inputs(entry, binary):
    inputs = []
    for t in entry["inputs"]:
        arr = np_from_reference(t)
        i = httpclient.InferInput(t["name"], list(arr.shape), t["datatype"])
        i.set_data_from_numpy(arr, binary_data=binary)
        inputs.append(i)
    return inputs


def normalise_bytes(arr):
    return np.array(
        [x if isinstance(x, bytes) else str(x).encode("utf-8") for x in arr.reshape(-1)], dtype=np.object_
    ).reshape(arr.shape)


def compare(name, got, want_t):
    """Raises AssertionError when `got` (numpy from as_numpy) differs from the reference tensor."""
    want = np_from_reference(want_t)
    assert got is not None, f"output {name!r} missing from the response"
    assert list(got.shape) == list(want_t["shape"]), f"{name}: shape {list(got.shape)} != {want_t['shape']}"
    if want_t["datatype"] == "BYTES":
        g, w = normalise_bytes(got), want
        assert g.reshape(-1).tolist() == w.reshape(-1).tolist(), f"{name}: {g.tolist()} != {w.tolist()}"
        return
    assert got.dtype == want.dtype, f"{name}: dtype {got.dtype} != {want.dtype}"
    if np.issubdtype(want.dtype, np.floating):
        g64, w64 = got.astype(np.float64), want.astype(np.float64)
        ok = np.allclose(g64, w64, rtol=RTOL, atol=ATOL, equal_nan=True)
        assert ok, f"{name}: max abs diff {np.max(np.abs(g64 - w64)) if g64.size else 0} (rtol {RTOL})"
    else:
        assert np.array_equal(got, want), f"{name}: {got.tolist()} != {want.tolist()}"


def check_result(result, entry, expect_names, binary_flags, request_id, version):
    """binary_flags: name -> expected binary (True) or JSON (False) delivery."""
    resp = result.get_response()
    assert resp.get("model_name") == entry["model"], f"model_name {resp.get('model_name')!r}"
    assert resp.get("model_version") == str(version), (
        f"model_version {resp.get('model_version')!r}, expected {str(version)!r}"
    )
    if request_id:
        assert resp.get("id") == request_id, f"id {resp.get('id')!r} != {request_id!r}"
    got_names = [o["name"] for o in resp["outputs"]]
    assert sorted(got_names) == sorted(expect_names), f"outputs {got_names} != requested {expect_names}"
    by_name = {t["name"]: t for t in entry["outputs"]}
    for name in expect_names:
        out = result.get_output(name)
        assert out["datatype"] == by_name[name]["datatype"], f"{name}: datatype {out['datatype']}"
        is_binary = "binary_data_size" in (out.get("parameters") or {})
        assert is_binary == binary_flags[name], (
            f"{name}: delivered {'binary' if is_binary else 'as JSON'}, asked {'binary' if binary_flags[name] else 'JSON'}"
        )
        assert is_binary or "data" in out, f"{name}: neither data nor binary_data_size"
        compare(name, result.as_numpy(name), by_name[name])


# ---- the checks ----


def server_checks(client):
    check("server live", lambda: None if client.is_server_live() else (_ for _ in ()).throw(AssertionError("not live")))

    def ready():
        assert client.is_server_ready(), "not ready"

    check("server ready", ready)

    def metadata():
        md = client.get_server_metadata()
        assert md.get("name"), f"no name: {md}"
        assert "version" in md, f"no version: {md}"
        assert "binary_tensor_data" in md.get("extensions", []), f"extensions {md.get('extensions')}"
        return f"{md['name']} {md['version']} extensions={md['extensions']}"

    check("server metadata", metadata)


def model_checks(client, reference):
    sigs = {}
    for e in reference:
        sigs.setdefault(e["model"], e)
    for model, versions in SERVED.items():
        for version in [None] + versions:
            label = f"{model}" + (f" v{version}" if version else "")
            vs = str(version) if version else ""

            def ready(model=model, vs=vs):
                assert client.is_model_ready(model, model_version=vs), "not ready"

            check(f"model ready {label}", ready)

            def metadata(model=model, vs=vs, version=version):
                md = client.get_model_metadata(model, model_version=vs)
                assert md["name"] == model, f"name {md['name']}"
                assert md["platform"], "no platform"
                if version:
                    assert md["versions"] == [str(version)], f"versions {md['versions']}"
                else:
                    assert sorted(md["versions"], key=int) == [str(v) for v in versions], f"versions {md['versions']}"
                for t in md["inputs"] + md["outputs"]:
                    assert t["datatype"] in (
                        "BOOL UINT8 UINT16 UINT32 UINT64 INT8 INT16 INT32 INT64 FP16 BF16 FP32 FP64 BYTES".split()
                    ), t
                    assert all(isinstance(d, int) and d >= -1 for d in t["shape"]), t
                ref = sigs.get(model)
                if ref:
                    want_in = {t["name"]: t["datatype"] for t in ref["inputs"]}
                    got_in = {t["name"]: t["datatype"] for t in md["inputs"]}
                    assert got_in == want_in, f"inputs {got_in} != {want_in}"
                    want_out = {t["name"]: t["datatype"] for t in ref["outputs"]}
                    got_out = {t["name"]: t["datatype"] for t in md["outputs"]}
                    assert got_out == want_out, f"outputs {got_out} != {want_out}"
                    for t in md["inputs"]:
                        rshape = next(r["shape"] for r in ref["inputs"] if r["name"] == t["name"])
                        assert len(t["shape"]) == len(rshape), f"{t['name']}: rank {t['shape']} vs {rshape}"
                        assert all(d == -1 or d == r for d, r in zip(t["shape"], rshape)), f"{t['shape']} vs {rshape}"
                return f"inputs={[(t['name'], t['datatype'], t['shape']) for t in md['inputs']]}"

            check(f"model metadata {label}", metadata)

            def config(model=model, vs=vs):
                cfg = client.get_model_config(model, model_version=vs)
                md = client.get_model_metadata(model, model_version=vs)
                assert cfg["name"] == model, f"name {cfg.get('name')}"
                mbs = cfg.get("max_batch_size", 0)
                assert [t["name"] for t in cfg["input"]] == [t["name"] for t in md["inputs"]], cfg["input"]
                assert [t["name"] for t in cfg["output"]] == [t["name"] for t in md["outputs"]], cfg["output"]
                for c, m in zip(cfg["input"] + cfg["output"], md["inputs"] + md["outputs"]):
                    want = "TYPE_STRING" if m["datatype"] == "BYTES" else "TYPE_" + m["datatype"]
                    assert c["data_type"] == want, f"{c['name']}: {c['data_type']} != {want}"
                    want_dims = m["shape"][1:] if mbs > 0 else m["shape"]
                    assert list(c["dims"]) == want_dims, f"{c['name']}: dims {c['dims']} vs shape {m['shape']} (max_batch_size {mbs})"
                return f"max_batch_size={mbs}"

            check(f"model config {label}", config)


OUTPUT_MODES = ["default", "all-binary", "all-json", "mixed", "subset"]


def infer_checks(client, reference):
    seen = {}
    for entry in reference:
        model, version = entry["model"], entry["version"]
        n = seen[(model, version)] = seen.get((model, version), 0) + 1
        tag = f"{model} v{version}" + (f" #{n}" if n > 1 else "")
        names = [t["name"] for t in entry["outputs"]]
        pins = [str(version)]
        if PRIMARY.get(model, 1) == version:
            pins.append("")  # unpinned: routed to the primary
        for binary_in in (True, False):
            for mode in OUTPUT_MODES:
                for pin in pins:
                    if mode == "default":
                        outputs, expect, flags = None, names, {k: True for k in names}
                    elif mode == "all-binary":
                        flags = {k: True for k in names}
                        outputs, expect = [httpclient.InferRequestedOutput(k, binary_data=True) for k in names], names
                    elif mode == "all-json":
                        flags = {k: False for k in names}
                        outputs, expect = [httpclient.InferRequestedOutput(k, binary_data=False) for k in names], names
                    elif mode == "mixed":
                        flags = {k: i % 2 == 0 for i, k in enumerate(names)}
                        outputs, expect = [httpclient.InferRequestedOutput(k, binary_data=flags[k]) for k in names], names
                    else:  # subset: the last output only, in the opposite delivery to the inputs
                        expect = names[-1:]
                        flags = {expect[0]: not binary_in}
                        outputs = [httpclient.InferRequestedOutput(expect[0], binary_data=not binary_in)]
                    rid = f"compat-{model}-{version}-{n}-{int(binary_in)}-{mode}-{pin or 'primary'}"
                    label = (
                        f"infer {tag} inputs={'binary' if binary_in else 'json'} outputs={mode} "
                        f"{'pinned v' + pin if pin else 'unpinned'}"
                    )

                    def run(entry=entry, binary_in=binary_in, outputs=outputs, expect=expect, flags=flags, rid=rid, pin=pin):
                        result = client.infer(
                            entry["model"],
                            make_inputs(entry, binary_in),
                            model_version=pin,
                            outputs=outputs,
                            request_id=rid,
                        )
                        check_result(result, entry, expect, flags, rid, entry["version"])

                    check(label, run)

    # No request id: the response must then carry none (or an empty one), never a made-up one.
    entry = reference[0]

    def no_id():
        result = client.infer(entry["model"], make_inputs(entry, True), model_version=str(entry["version"]))
        rid = result.get_response().get("id")
        assert rid in (None, ""), f"id {rid!r} without one in the request"
        check_result(result, entry, [t["name"] for t in entry["outputs"]], {t["name"]: True for t in entry["outputs"]}, None, entry["version"])

    check("infer without request id", no_id)

    # Request-level parameters tritonclient can send (priority, timeout in us, custom ones).
    def params():
        result = client.infer(
            entry["model"], make_inputs(entry, False), model_version=str(entry["version"]),
            request_id="with-params", priority=1, timeout=5_000_000, parameters={"custom_key": "v", "n": 3},
        )
        check_result(result, entry, [t["name"] for t in entry["outputs"]], {t["name"]: True for t in entry["outputs"]}, "with-params", entry["version"])

    check("infer with priority/timeout/custom request parameters", params)

    # Larger batches: the dense reference rows repeated up to its max_batch_size, and credit
    # rows (no batching) repeated 16 times.
    for model in ("dense", "credit-scoring"):
        base = next(e for e in reference if e["model"] == model)
        reps = MAX_BATCH.get(model, 16 * base["inputs"][0]["shape"][0]) // base["inputs"][0]["shape"][0]
        big = {
            "model": model,
            "version": base["version"],
            "inputs": [dict(t, shape=[t["shape"][0] * reps] + t["shape"][1:], data=t["data"] * reps) for t in base["inputs"]],
            "outputs": [dict(t, shape=[t["shape"][0] * reps] + t["shape"][1:], data=t["data"] * reps) for t in base["outputs"]],
        }
        for binary in (True, False):
            def run_big(big=big, binary=binary):
                names = [t["name"] for t in big["outputs"]]
                outs = [httpclient.InferRequestedOutput(k, binary_data=binary) for k in names]
                result = client.infer(big["model"], make_inputs(big, binary), outputs=outs, model_version=str(big["version"]))
                check_result(result, big, names, {k: binary for k in names}, None, big["version"])

            check(f"infer {model} batch x{reps} {'binary' if binary else 'json'}", run_big)


def async_checks(url, reference):
    entry = next(e for e in reference if e["model"] == "dense")
    names = [t["name"] for t in entry["outputs"]]

    def gevent_async():
        client = httpclient.InferenceServerClient(url, concurrency=8)
        try:
            pending = []
            for i in range(24):
                binary = i % 2 == 0
                outs = [httpclient.InferRequestedOutput(k, binary_data=binary) for k in names]
                pending.append((binary, f"async-{i}", client.async_infer("dense", make_inputs(entry, binary), outputs=outs, request_id=f"async-{i}")))
            for binary, rid, p in pending:
                check_result(p.get_result(), entry, names, {k: binary for k in names}, rid, entry["version"])
        finally:
            client.close()
        return "24 concurrent requests"

    check("async_infer (gevent, concurrency 8) on dense", gevent_async)

    async def aio_run():
        client = aioclient.InferenceServerClient(url)
        try:
            assert await client.is_server_live(), "not live"
            assert await client.is_server_ready(), "not ready"
            assert await client.is_model_ready("dense"), "dense not ready"
            md = await client.get_model_metadata("dense")
            assert md["name"] == "dense", md
            cfg = await client.get_model_config("dense")
            assert cfg["name"] == "dense", cfg
            tasks = []
            for i in range(8):
                binary = i % 2 == 0
                outs = [aioclient.InferRequestedOutput(k, binary_data=binary) for k in names]
                inputs = []
                for t in entry["inputs"]:
                    arr = np_from_reference(t)
                    inp = aioclient.InferInput(t["name"], list(arr.shape), t["datatype"])
                    inp.set_data_from_numpy(arr, binary_data=binary)
                    inputs.append(inp)
                tasks.append((binary, f"aio-{i}", client.infer("dense", inputs, outputs=outs, request_id=f"aio-{i}")))
            got = await asyncio.gather(*(t for _, _, t in tasks))
            for (binary, rid, _), result in zip(tasks, got):
                check_result(result, entry, names, {k: binary for k in names}, rid, entry["version"])
        finally:
            await client.close()
        return "8 concurrent requests"

    check("tritonclient.http.aio (aiohttp) metadata + infer on dense", lambda: asyncio.run(aio_run()))


def expect_error(fn, status, words):
    try:
        fn()
    except InferenceServerException as e:
        assert e.status() == str(status), f"status {e.status()} (msg {e.message()!r}), expected {status}"
        msg = e.message() or ""
        for w in words:
            assert w.lower() in msg.lower(), f"message {msg!r} does not mention {w!r}"
        return f"{e.status()}: {msg}"
    raise AssertionError(f"no error, expected {status}")


def error_checks(client, reference):
    credit = next(e for e in reference if e["model"] == "credit-scoring")

    def still_serving():
        result = client.infer("credit-scoring", make_inputs(credit, True), model_version="1")
        check_result(result, credit, [t["name"] for t in credit["outputs"]], {t["name"]: True for t in credit["outputs"]}, None, 1)

    check("unknown model -> 404", lambda: expect_error(lambda: client.infer("no-such-model", make_inputs(credit, True)), 404, ["no-such-model"]))
    check("unknown model metadata -> 404", lambda: expect_error(lambda: client.get_model_metadata("no-such-model"), 404, ["no-such-model"]))
    check("unknown version -> 404", lambda: expect_error(lambda: client.infer("credit-scoring", make_inputs(credit, True), model_version="9"), 404, ["9"]))
    check("model not ready for unknown version", lambda: None if not client.is_model_ready("credit-scoring", model_version="9") else (_ for _ in ()).throw(AssertionError("ready?")))

    def wrong_name():
        arr = np_from_reference(credit["inputs"][0])
        i = httpclient.InferInput("not_features", list(arr.shape), "FP32")
        i.set_data_from_numpy(arr)
        return client.infer("credit-scoring", [i])

    check("wrong input name -> 422", lambda: expect_error(wrong_name, 422, ["not_features"]))

    def wrong_type():
        arr = np_from_reference(credit["inputs"][0]).astype(np.float64)
        i = httpclient.InferInput("features", list(arr.shape), "FP64")
        i.set_data_from_numpy(arr, binary_data=False)
        return client.infer("credit-scoring", [i])

    check("wrong input datatype -> 422", lambda: expect_error(wrong_type, 422, ["FP64", "FP32"]))

    def wrong_shape():
        arr = np.zeros((2, 5), dtype=np.float32)
        i = httpclient.InferInput("features", [2, 5], "FP32")
        i.set_data_from_numpy(arr)
        return client.infer("credit-scoring", [i])

    check("wrong input shape -> 422", lambda: expect_error(wrong_shape, 422, ["features"]))
    check(
        "unknown requested output -> 422",
        lambda: expect_error(lambda: client.infer("credit-scoring", make_inputs(credit, True), outputs=[httpclient.InferRequestedOutput("nope")]), 422, ["nope"]),
    )

    def run_failure():
        entry = dict(credit, model="mirror")
        return client.infer("mirror", make_inputs(entry, True), model_version="3")

    # v3's graph gathers past the end: ONNX Runtime calls that INVALID_ARGUMENT, but the primary
    # (v1) accepts the same inputs, so the version is at fault, not the request.
    check("model failing at run time -> 500 with the reason", lambda: expect_error(run_failure, 500, ["gather", "version 3"]))

    def out_of_vocabulary():
        ids = np.array([[1, 2, 99]], dtype=np.int64)
        i = httpclient.InferInput("input_ids", [1, 3], "INT64")
        i.set_data_from_numpy(ids)
        return client.infer("embed", [i])

    check("token id outside the vocabulary -> 400 with ONNX Runtime's reason", lambda: expect_error(out_of_vocabulary, 400, ["indices", "out of data bounds"]))

    def too_many_rows():
        arr = np.zeros((MAX_BATCH["dense"] + 1,) + tuple(next(e for e in reference if e["model"] == "dense")["inputs"][0]["shape"][1:]), dtype=np.float32)
        i = httpclient.InferInput(next(e for e in reference if e["model"] == "dense")["inputs"][0]["name"], list(arr.shape), "FP32")
        i.set_data_from_numpy(arr)
        return client.infer("dense", [i])

    check("more rows than max_batch_size -> 422", lambda: expect_error(too_many_rows, 422, ["max_batch_size"]))
    check("still serving after the errors", still_serving)


def optional_checks(client, url, reference):
    entry = reference[0]
    names = [t["name"] for t in entry["outputs"]]

    def compressed(algorithm):
        def run():
            result = client.infer(entry["model"], make_inputs(entry, True), model_version=str(entry["version"]), request_compression_algorithm=algorithm)
            check_result(result, entry, names, {k: True for k in names}, None, entry["version"])
        return run

    info("request compression gzip (Triton feature)", compressed("gzip"))
    info("request compression deflate (Triton feature)", compressed("deflate"))

    def response_compressed():
        result = client.infer(entry["model"], make_inputs(entry, True), model_version=str(entry["version"]), response_compression_algorithm="gzip")
        check_result(result, entry, names, {k: True for k in names}, None, entry["version"])
        return "works (reply may be uncompressed; the client accepts both)"

    info("response compression gzip (Triton feature)", response_compressed)
    info("repository index (Triton extension)", lambda: f"works: {client.get_model_repository_index()}")


def statistics_checks(client):
    """Triton's statistics extension, after the inferences above."""
    def per_version():
        stats = client.get_inference_statistics(model_name="credit-scoring", model_version="1")["model_stats"]
        assert len(stats) == 1 and stats[0]["version"] == "1", stats
        s = stats[0]
        assert int(s["inference_stats"]["success"]["count"]) > 0, s
        assert int(s["execution_count"]) > 0 and int(s["inference_count"]) >= int(s["execution_count"]), s
        return f"{s['inference_stats']['success']['count']} answered, {s['execution_count']} runs"

    def every_model():
        names = {s["name"] for s in client.get_inference_statistics()["model_stats"]}
        assert {"credit-scoring", "dense"} <= names, names

    check("inference statistics of one version (Triton extension)", per_version)
    check("inference statistics of every model", every_model)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="127.0.0.1:48080", help="host:port of the gateway's data plane")
    ap.add_argument("--reference", default="models/tests/reference.json")
    ap.add_argument("--quiet", action="store_true", help="print only failures, INFO lines and the summary")
    args = ap.parse_args()
    with open(args.reference, encoding="utf-8") as f:
        reference = json.load(f)
    global QUIET
    QUIET = args.quiet
    from importlib.metadata import version

    print(f"tritonclient {version('tritonclient')}, numpy {np.__version__}, gateway at {args.url}")
    client = httpclient.InferenceServerClient(args.url, concurrency=1, connection_timeout=10, network_timeout=30)
    try:
        server_checks(client)
        model_checks(client, reference)
        infer_checks(client, reference)
        error_checks(client, reference)
        async_checks(args.url, reference)
        optional_checks(client, args.url, reference)
        statistics_checks(client)
    finally:
        client.close()
    passed = sum(1 for s, *_ in results if s == "PASS")
    failed = sum(1 for s, *_ in results if s == "FAIL")
    infos = sum(1 for s, *_ in results if s == "INFO")
    if failed:
        print("\nfailures:")
        for s, name, detail in results:
            if s == "FAIL":
                print(f"  {name}: {detail}")
    print(f"\ntritonclient: {infos} optional features probed (INFO above)")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
