#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ from the project's own test requests
(gateway/tests/*.rs, models/tests/reference.json) and config files (config/, config/examples/,
config/invalid/, the demo, bench and compat configs). Standard library only; run from anywhere:

    python3 fuzz/make_corpus.py

Each seed starts with the selector byte the targets read (see fuzz/src/lib.rs `Selector`):
bits 0-4 pick the signature (the numbers below), bits 5-6 the round-trip encoding, bit 7 a tiny
element cap. decode_binary seeds then hold the two-byte little-endian JSON length.
"""

import glob
import json
import os
import shutil
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")

# Signature numbers, as in fuzz/src/lib.rs.
(CREDIT, MULTI_IO, STRINGS, SCALAR, DTYPES, FIXED, NORANK, CONTROL_FLOW, ALL_TYPES, DENSE, NO_INPUTS, F16_BYTES,
 F64_ALONE) = range(13)
BY_MODEL = {"credit-scoring": CREDIT, "multi_io": MULTI_IO, "strings": STRINGS, "scalar": SCALAR,
            "dtypes": DTYPES, "fixed": FIXED, "norank": NORANK, "control_flow": CONTROL_FLOW,
            "dense": DENSE, "slow": None}
TYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
         "FP16", "BF16", "FP32", "FP64", "BYTES"]


def dumps(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def write(target, name, data):
    folder = os.path.join(CORPUS, target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def tensor(name, datatype, shape, data=None, **params):
    t = {"name": name, "datatype": datatype, "shape": shape}
    if params:
        t["parameters"] = params
    if data is not None:
        t["data"] = data
    return t


# ---- little-endian binary data (the binary extension and gRPC raw contents) ----

PACK = {"BOOL": "?", "UINT8": "B", "UINT16": "H", "UINT32": "I", "UINT64": "Q", "INT8": "b",
        "INT16": "h", "INT32": "i", "INT64": "q", "FP16": "e", "FP32": "f", "FP64": "d"}


def raw(datatype, values):
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(v)) + v for v in (s.encode() for s in values))
    values = [float(v) if isinstance(v, str) else v for v in values]  # "NaN", "-Infinity"
    if datatype == "BF16":
        return b"".join(struct.pack("<f", v)[2:] for v in values)
    return struct.pack("<%d%s" % (len(values), PACK[datatype]), *values)


def flat(data):
    return [x for row in data for x in flat(row)] if isinstance(data, list) else [data]


# ---- JSON requests, drawn from the tests ----

def json_requests():
    """(name, signature, request) triples."""
    out = []
    with open(os.path.join(ROOT, "models", "tests", "reference.json")) as f:
        reference = json.load(f)
    seen = set()
    for entry in reference:
        sig = BY_MODEL.get(entry["model"])
        if sig is None or (entry["model"], entry["version"]) in seen:
            continue
        seen.add((entry["model"], entry["version"]))
        if entry["model"] == "credit-scoring" and entry["version"] > 1:
            continue
        out.append(("reference-%s" % entry["model"], sig, {"inputs": entry["inputs"]}))
    six = [1, 2, 3, 4, 5, 6]
    out += [
        # protocol.rs: ids, requested outputs, nested data, 0-d, strings, every datatype
        ("credit-id-outputs", CREDIT, {"id": "req-\"42\"-ü", "inputs": [tensor("features", "FP32", [1, 8], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])],
                                       "outputs": [{"name": "probabilities"}]}),
        ("credit-nested-binary-output", CREDIT, {"inputs": [tensor("features", "FP32", [2, 8], [[1, 2, 3, 4, 5, 6, 7, 8], [-1, -2.5, 3e-3, 4e10, 0, -0.0, 1, 2]])],
                                                 "parameters": {"binary_data_output": True},
                                                 "outputs": [{"name": "label", "parameters": {"binary_data": False}}, {"name": "probabilities"}]}),
        ("multi_io-outputs-ordered", MULTI_IO, {"inputs": [tensor("x", "FP32", [1, 2], [1, 2]), tensor("y", "FP32", [1, 2], [10, 20]), tensor("n", "INT64", [3], [1, 2, 3])],
                                                "outputs": [{"name": "n_plus_one"}, {"name": "sum.out"}]}),
        ("multi_io-any-order", MULTI_IO, {"inputs": [tensor("n", "INT64", [5], [0, -1, 1, 41, -9000000000000]), tensor("y", "FP32", [3, 1], [[0.5], [1.5], [-1]]),
                                                     tensor("x", "FP32", [3, 1], [1, 2, 3])]}),
        ("scalar", SCALAR, {"inputs": [tensor("x", "FP32", [], [2.5]), tensor("k", "INT64", [], [-9])]}),
        ("strings", STRINGS, {"inputs": [tensor("text", "BYTES", [5], ["plain", "", "Grüße 🙂", "quote \" and \\ backslash", "tab\tnew\nline"])]}),
        ("dtypes", DTYPES, {"inputs": [
            tensor("bool", "BOOL", [2], [True, False]), tensor("u8", "UINT8", [2], [0, 127]), tensor("u16", "UINT16", [2], [1, 32767]),
            tensor("u32", "UINT32", [2], [3, 2147483647]), tensor("u64", "UINT64", [2], [5, 4611686018427387907]),
            tensor("i8", "INT8", [2], [-64, 63]), tensor("i16", "INT16", [2], [-16384, 7]), tensor("i32", "INT32", [2], [-1073741824, 9]),
            tensor("i64", "INT64", [2], [-4611686018427387903, 2305843009213693953]), tensor("f16", "FP16", [2], [1.5, 32752]),
            tensor("f32", "FP32", [2], [0.25, -3.5e30]), tensor("f64", "FP64", [2], [0.1, -1e300])]}),
        ("control_flow", CONTROL_FLOW, {"inputs": [tensor("cond", "BOOL", [], [True]), tensor("x", "FP32", [3], [1, 2.5, -3])]}),
        ("norank-0d", NORANK, {"inputs": [tensor("x", "FP32", [], [1])]}),
        ("norank-rank3", NORANK, {"inputs": [tensor("x", "FP32", [1, 2, 1], [1, 2])]}),
        ("no-inputs", NO_INPUTS, {"inputs": []}),
        ("f16-bytes", F16_BYTES, {"inputs": [tensor("h", "FP16", [1, 2, 2], [1, "NaN", "-Infinity", 65504]), tensor("s", "BYTES", [3, 1], ["a", "b", "c"])]}),
        ("f64", F64_ALONE, {"inputs": [tensor("v", "FP64", [4], [0.1, -1.0000000000000148e300, 5e-324, 1.7976931348623157e308])]}),
        ("all-types", ALL_TYPES, {"inputs": [tensor(t.lower(), t, [2], ["x", "y"] if t == "BYTES" else [True, False] if t == "BOOL" else [0, 1])
                                             for t in TYPES]}),
        # binary.rs: non-finite floats as strings
        ("non-finite", MULTI_IO, {"inputs": [tensor("x", "FP32", [1, 3], ["NaN", "Infinity", "-Infinity"]), tensor("y", "FP32", [1, 3], ["nan", "inf", "-inf"]),
                                             tensor("n", "INT64", [0], [])]}),
        # hostile.rs: each mistake once (against fixed: x FP32 [2, 3])
        ("hostile-unknown-input", FIXED, {"inputs": [tensor("X", "FP32", [2, 3], six)]}),
        ("hostile-datatype", FIXED, {"inputs": [tensor("x", "INT32", [2, 3], six)]}),
        ("hostile-rank", FIXED, {"inputs": [tensor("x", "FP32", [1, 2, 3], six)]}),
        ("hostile-short", FIXED, {"inputs": [tensor("x", "FP32", [2, 3], six[:5])]}),
        ("hostile-long", FIXED, {"inputs": [tensor("x", "FP32", [2, 3], six + [7])]}),
        ("hostile-element-type", FIXED, {"inputs": [tensor("x", "FP32", [2, 3], six[:5] + [None])]}),
        ("hostile-negative-dim", FIXED, {"inputs": [tensor("x", "FP32", [-2, 3], six)]}),
        ("hostile-no-data", FIXED, {"inputs": [tensor("x", "FP32", [2, 3])]}),
        ("hostile-both-data-and-binary", FIXED, {"inputs": [tensor("x", "FP32", [2, 3], six, binary_data_size=24)]}),
        ("hostile-shared-memory", FIXED, {"inputs": [tensor("x", "FP32", [2, 3], six, shared_memory_region="r")],
                                          "outputs": [{"name": "y", "parameters": {"shared_memory_region": "o"}}]}),
        ("hostile-classification", FIXED, {"inputs": [tensor("x", "FP32", [2, 3], six)], "outputs": [{"name": "y", "parameters": {"classification": 2}}]}),
        ("hostile-output-twice", FIXED, {"inputs": [tensor("x", "FP32", [2, 3], six)], "outputs": [{"name": "y"}, {"name": "y"}]}),
        ("hostile-input-twice", SCALAR, {"inputs": [tensor("x", "FP32", [], [1]), tensor("x", "FP32", [], [1])]}),
        ("hostile-overflowing-shape", MULTI_IO, {"inputs": [tensor("x", "FP32", [4611686018427387904, 4611686018427387904], [1]),
                                                            tensor("y", "FP32", [1, 1], [1]), tensor("n", "INT64", [1], [1])]}),
        ("hostile-huge-zero-shape", MULTI_IO, {"inputs": [tensor("x", "FP32", [1 << 40, 0], []), tensor("y", "FP32", [1 << 40, 0], []),
                                                          tensor("n", "INT64", [1], [1])]}),
        ("hostile-symbol-conflict", MULTI_IO, {"inputs": [tensor("x", "FP32", [1, 2], [1, 2]), tensor("y", "FP32", [2, 1], [1, 2]), tensor("n", "INT64", [1], [1])]}),
        ("hostile-huge-bytes", STRINGS, {"inputs": [tensor("text", "BYTES", [1 << 27], ["a"])]}),
        ("hostile-nul-string", STRINGS, {"inputs": [tensor("text", "BYTES", [1], ["a\u0000b"])]}),
        ("hostile-int-range", DTYPES, {"inputs": [tensor("u8", "UINT8", [1], [256]), tensor("i8", "INT8", [1], [-129])]}),
    ]
    return out


RAW_STRINGS = [
    ("deep-nesting", CREDIT, b'{"inputs":[{"name":"features","datatype":"FP32","shape":[1,8],"data":' + b"[" * 200 + b"1" + b"]" * 200 + b"}]}"),
    ("not-an-object", CREDIT, b"[1, 2, 3]"),
    ("truncated", CREDIT, b'{"inputs":[{"name":"features","datatype":"FP32","shape":[1,8],"data":[1,2,'),
    ("bom", CREDIT, "\ufeffnot json at all".encode()),
    ("dim-past-i64", FIXED, b'{"inputs":[{"name":"x","datatype":"FP32","shape":[18446744073709551615,1],"data":[1]}]}'),
]


def json_seeds():
    for name, sig, request in json_requests():
        write("decode_json", name + ".json", bytes([sig]) + dumps(request))
    for name, sig, body in RAW_STRINGS:
        write("decode_json", name + ".json", bytes([sig]) + body)
    # The tiny element cap (selector bit 7) and the binary round trip (bits 5-6).
    write("decode_json", "cap-credit.json", bytes([0x80 | CREDIT]) + dumps(json_requests()[0][2]))
    write("decode_json", "roundtrip-binary-dtypes.json", bytes([0x20 | DTYPES]) + dict(
        (n, dumps(r)) for n, _, r in json_requests())["dtypes"])


# ---- binary extension requests ----

def binary_body(header, parts, json_length=None):
    text = dumps(header)
    length = len(text) if json_length is None else json_length
    return struct.pack("<H", length) + text + b"".join(parts)


def as_binary(request, which=None):
    """The request with the inputs named in `which` (all when None) moved to binary data."""
    header = json.loads(dumps(request))
    parts = []
    for t in header["inputs"]:
        if which is not None and t["name"] not in which:
            continue
        data = raw(t["datatype"], flat(t.pop("data")))
        t.setdefault("parameters", {})["binary_data_size"] = len(data)
        parts.append(data)
    return header, parts


def binary_seeds():
    requests = {name: (sig, r) for name, sig, r in json_requests()}
    cases = [
        ("credit", "reference-credit-scoring", None),
        ("multi_io-mixed", "multi_io-outputs-ordered", {"x", "y"}),
        ("scalar", "scalar", None),
        ("strings", "strings", None),
        ("dtypes", "dtypes", None),
        ("control_flow", "control_flow", None),
        ("f16-bytes", "f16-bytes", None),
        ("all-types", "all-types", None),
        ("norank", "norank-rank3", None),
        ("f64", "f64", None),
    ]
    for name, source, which in cases:
        sig, request = requests[source]
        header, parts = as_binary(request, which)
        write("decode_binary", name + ".bin", bytes([sig]) + binary_body(header, parts))
    sig, request = requests["reference-credit-scoring"]
    header, parts = as_binary(request)
    write("decode_binary", "trailing-bytes.bin", bytes([sig]) + binary_body(header, parts + [b"\0"]))
    write("decode_binary", "short-data.bin", bytes([sig]) + binary_body(header, [parts[0][:-1]]))
    write("decode_binary", "length-past-body.bin", bytes([sig]) + binary_body(header, parts, 0xFFFF))
    write("decode_binary", "plain-json-in-binary.bin", bytes([sig]) + binary_body(request, []))
    bad = {"inputs": [tensor("text", "BYTES", [2], binary_data_size=11)]}
    write("decode_binary", "bytes-bad-utf8.bin", bytes([STRINGS]) + binary_body(
        bad, [struct.pack("<I", 2) + b"ok" + struct.pack("<I", 1) + b"\xff"]))
    lying = {"inputs": [tensor("text", "BYTES", [1], binary_data_size=9)]}
    write("decode_binary", "bytes-length-lies.bin", bytes([STRINGS]) + binary_body(lying, [struct.pack("<I", 10) + b"short"]))


# ---- gRPC ModelInferRequest, protobuf written by hand ----

def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number, wire, payload):
    key = varint(number << 3 | wire)
    if wire == 2:
        return key + varint(len(payload)) + payload
    return key + payload


def msg(number, payload):
    return field(number, 2, payload)


def string(number, s):
    return field(number, 2, s.encode() if isinstance(s, str) else s)


def packed(number, kind, values):
    if kind == "varint":
        body = b"".join(varint(int(v)) for v in values)
    else:
        body = struct.pack("<%d%s" % (len(values), kind), *values)
    return field(number, 2, body)


def parameter(key, value):
    """A map<string, InferParameter> entry."""
    if isinstance(value, bool):
        inner = field(1, 0, varint(int(value)))
    elif isinstance(value, int):
        inner = field(2, 0, varint(value))
    else:
        inner = string(3, value)
    return string(1, key) + msg(2, inner)


CONTENTS = {"BOOL": (1, "varint"), "INT8": (2, "varint"), "INT16": (2, "varint"), "INT32": (2, "varint"),
            "INT64": (3, "varint"), "UINT8": (4, "varint"), "UINT16": (4, "varint"), "UINT32": (4, "varint"),
            "UINT64": (5, "varint"), "FP32": (6, "f"), "FP64": (7, "d")}


def grpc_request(request, raw_contents=False, outputs=(), request_id="", input_params=None):
    out = string(1, "m")
    if request_id:
        out += string(3, request_id)
    raws = []
    for t in request["inputs"]:
        values = flat(t["data"])
        body = string(1, t["name"]) + string(2, t["datatype"]) + packed(3, "varint", t["shape"])
        for key, value in (input_params or {}).get(t["name"], {}).items():
            body += msg(4, parameter(key, value))
        if raw_contents:
            raws.append(raw(t["datatype"], values))
        elif t["datatype"] == "BYTES":
            body += msg(5, b"".join(string(8, v) for v in values))
        elif t["datatype"] in CONTENTS:
            number, kind = CONTENTS[t["datatype"]]
            body += msg(5, packed(number, kind, values))
        out += msg(5, body)
    for name, params in outputs:
        out += msg(6, string(1, name) + b"".join(msg(2, parameter(k, v)) for k, v in params.items()))
    for r in raws:
        out += string(7, r)
    return out


def grpc_seeds():
    requests = {name: (sig, r) for name, sig, r in json_requests()}
    typed = ["reference-credit-scoring", "multi_io-any-order", "scalar", "strings", "control_flow", "norank-rank3", "no-inputs"]
    for name in typed:
        sig, request = requests[name]
        write("decode_grpc", name + "-typed.pb", bytes([sig]) + grpc_request(request))
    for name in ["reference-credit-scoring", "strings", "dtypes", "f16-bytes", "all-types", "scalar"]:
        sig, request = requests[name]
        write("decode_grpc", name + "-raw.pb", bytes([sig]) + grpc_request(request, raw_contents=True))
    sig, request = requests["dtypes"]
    no16 = {"inputs": [t for t in request["inputs"] if t["datatype"] not in ("FP16", "BF16")]}
    write("decode_grpc", "dtypes-typed.pb", bytes([sig]) + grpc_request(no16))
    sig, request = requests["multi_io-outputs-ordered"]
    write("decode_grpc", "multi_io-outputs-id.pb", bytes([sig]) + grpc_request(
        request, outputs=[("n_plus_one", {}), ("sum.out", {"binary_data": True})], request_id="r-1"))
    write("decode_grpc", "hostile-classification.pb", bytes([sig]) + grpc_request(request, outputs=[("sum.out", {"classification": 2})]))
    write("decode_grpc", "hostile-shared-memory.pb", bytes([sig]) + grpc_request(request, input_params={"x": {"shared_memory_region": "r"}}))
    sig, request = requests["hostile-int-range"]
    write("decode_grpc", "hostile-int-range.pb", bytes([sig]) + grpc_request(request))
    # Typed and raw at once, and a raw count that does not match the inputs.
    sig, request = requests["reference-credit-scoring"]
    mixed = grpc_request(request) + string(7, b"\0" * 4)
    write("decode_grpc", "hostile-typed-and-raw.pb", bytes([sig]) + mixed)
    write("decode_grpc", "roundtrip-raw-credit.pb", bytes([0x20 | sig]) + grpc_request(request))


# ---- config files ----

def config_seeds():
    files = sorted(glob.glob(os.path.join(ROOT, "config", "**", "*.toml"), recursive=True))
    files += [os.path.join(ROOT, p) for p in ("loadtest/demo/rollout-demo.toml", "benches/compare/gateway-bench.toml",
                                              "scripts/compat/compat.toml", "scripts/compat/gateway.toml")]
    for path in files:
        rel = os.path.relpath(path, ROOT).replace(os.sep, "_")
        with open(path, "rb") as f:
            write("config", rel, f.read())
    # gateway/tests: the test models, monitoring and rollout tables.
    tests = {
        "tests-every-model.toml": "".join("[models.%s]\nrepository = \"models/tests\"\nrouting = { primary = 1 }\n" % m
                                          for m in ("multi_io", "scalar", "strings", "dtypes", "fixed", "norank", "control_flow")),
        "tests-rollout.toml": """
[models.credit-scoring]
repository = "models"
[models.credit-scoring.routing]
primary = 1
candidates = [{ version = 2, percent = 5.0 }]
shadows = [{ version = 3, percent = 50.0 }]
sticky_header = "x-user-id"
[models.credit-scoring.monitor]
output = "probabilities"
range = [0.0, 1.0]
score = "positive_class"
threshold = 0.5
[models.credit-scoring.rollout]
steps = [5, 25, 50, 100]
step_interval_s = 3600
min_requests = 20
max_error_rate = 0.05
max_p99_latency_ms = 500
max_shadow_disagreement = 0.5
max_false_positive_rate = 0.1
min_labelled_negatives = 20
on_failure = "rollback"
""",
        "tests-monitor-baseline.toml": "[models.multi_io]\nrepository = \"models/tests\"\nrouting = { primary = 1 }\n"
                                       "monitor = { output = \"scaled.out\", baseline = \"models/tests/reference.json\" }\n",
        "tests-public-admin.toml": "[server]\nadmin_listen = \"0.0.0.0:9090\"\n[admin]\ntoken_env = \"HOME\"\n"
                                   "[models.credit-scoring]\nrepository = \"models\"\nrouting = { primary = 1, versions = [2, 3] }\n",
        "tests-every-problem.toml": """
[server]
listen = "nowhere"
max_in_flight = 0
[runtime]
execution_providers = ["tpu"]
[models.credit-scoring]
repository = "models"
routing = { primary = 1, candidates = [{ version = 2, percent = 150.0 }, { version = 9, percent = 1.0 }] }
""",
    }
    for name, text in tests.items():
        write("config", name, text.encode())


def main():
    for target in ("decode_json", "decode_binary", "decode_grpc", "config"):
        shutil.rmtree(os.path.join(CORPUS, target), ignore_errors=True)
    json_seeds()
    binary_seeds()
    grpc_seeds()
    config_seeds()
    for target in sorted(os.listdir(CORPUS)):
        files = os.listdir(os.path.join(CORPUS, target))
        size = sum(os.path.getsize(os.path.join(CORPUS, target, f)) for f in files)
        print("%-14s %3d seeds, %6d bytes" % (target, len(files), size))


if __name__ == "__main__":
    main()
