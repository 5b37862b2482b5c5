#!/usr/bin/env python3
"""Builds every ONNX model under models/ and the reference outputs the tests compare against.

Run from the repository root with the pinned tools of models/requirements.txt:

    python3 -m venv /tmp/models-venv
    /tmp/models-venv/bin/pip install -r models/requirements.txt
    /tmp/models-venv/bin/python models/make_models.py

Weights come from fixed seeds, so the output is the same on every run. The example repository
(`credit-scoring`, `dense`) is what `cargo run --release` serves; `models/tests/` holds small
models that exercise one protocol feature each, and `models/tests/reference.json` holds inputs and
the outputs Python's onnxruntime gives for them (the gateway must return the same).
"""

import json
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.abspath(__file__))
OPSET = [helper.make_opsetid("", 17)]
IR_VERSION = 8


def save(model_dir, graph, opset=OPSET, check=True):
    model = helper.make_model(graph, opset_imports=opset, producer_name="gateway-models")
    model.ir_version = IR_VERSION
    if check:
        onnx.checker.check_model(model)
    os.makedirs(model_dir, exist_ok=True)
    path = os.path.join(model_dir, "model.onnx")
    onnx.save(model, path)
    return path


def init(name, array):
    return numpy_helper.from_array(array, name)


def credit_scoring(version):
    """8 features -> 16 hidden (relu) -> 2 class scores -> softmax; label is the argmax.

    The versions share a seed for the first layer and differ in the second, so a split is
    visible: v2 approves noticeably more often (class 1), v3 stays close to v1.
    """
    rng = np.random.RandomState(7)
    w1 = rng.normal(0, 0.6, (8, 16)).astype(np.float32)
    b1 = rng.normal(0, 0.1, (16,)).astype(np.float32)
    w2 = rng.normal(0, 0.6, (16, 2)).astype(np.float32)
    b2 = np.zeros((2,), dtype=np.float32)
    if version == 2:
        b2 = np.array([-0.8, 0.8], dtype=np.float32)
    elif version == 3:
        w2 = w2 + np.random.RandomState(11).normal(0, 0.02, w2.shape).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["features", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["l0"]),
        helper.make_node("Add", ["l0", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        f"credit_scoring_v{version}",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 8])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2]),
        ],
        [init("w1", w1), init("b1", b1), init("w2", w2), init("b2", b2)],
    )
    return save(os.path.join(ROOT, "credit-scoring", str(version)), graph)


def dense():
    """The benchmark model of ../shared/PEERS.md: 256 -> 3 x 1024 (relu) -> 16, about 9.5 MB of FP32 weights.

    Heavy enough per row (2.4 M multiply-adds) that compute, not HTTP, is what batching has to
    win back: ONNX Runtime runs it several times faster per row at batch 32 than at batch 1.
    """
    rng = np.random.RandomState(3)
    sizes = [256, 1024, 1024, 1024, 16]
    nodes, inits, prev = [], [], "input"
    for i in range(4):
        w = (rng.normal(0, 1.0, (sizes[i], sizes[i + 1])) / np.sqrt(sizes[i])).astype(np.float32)
        b = np.zeros((sizes[i + 1],), dtype=np.float32)
        inits += [init(f"w{i}", w), init(f"b{i}", b)]
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]))
        out = "output" if i == 3 else f"a{i}"
        nodes.append(helper.make_node("Add", [f"m{i}", f"b{i}"], [out if i == 3 else f"z{i}"]))
        if i < 3:
            nodes.append(helper.make_node("Relu", [f"z{i}"], [out]))
        prev = out
    graph = helper.make_graph(
        nodes,
        "dense",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 256])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 16])],
        inits,
    )
    return save(os.path.join(ROOT, "dense", "1"), graph)


def multi_io():
    """Several inputs and outputs, every dimension dynamic, output names with dots."""
    two = np.array(2.0, dtype=np.float32)
    one = np.array(1, dtype=np.int64)
    nodes = [
        helper.make_node("Add", ["x", "y"], ["sum.out"]),
        helper.make_node("Mul", ["x", "two"], ["scaled.out"]),
        helper.make_node("Add", ["n", "one"], ["n_plus_one"]),
    ]
    graph = helper.make_graph(
        nodes,
        "multi_io",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["a", "b"]),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b"]),
            helper.make_tensor_value_info("n", TensorProto.INT64, ["c"]),
        ],
        [
            helper.make_tensor_value_info("sum.out", TensorProto.FLOAT, ["a", "b"]),
            helper.make_tensor_value_info("scaled.out", TensorProto.FLOAT, ["a", "b"]),
            helper.make_tensor_value_info("n_plus_one", TensorProto.INT64, ["c"]),
        ],
        [init("two", two), init("one", one)],
    )
    return save(os.path.join(ROOT, "tests", "multi_io", "1"), graph)


def scalar():
    """0-d tensors in and out: y = 3x + 1, k2 = k * k."""
    nodes = [
        helper.make_node("Mul", ["x", "three"], ["t"]),
        helper.make_node("Add", ["t", "one"], ["y"]),
        helper.make_node("Mul", ["k", "k"], ["k2"]),
    ]
    graph = helper.make_graph(
        nodes,
        "scalar",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, []),
            helper.make_tensor_value_info("k", TensorProto.INT64, []),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, []),
            helper.make_tensor_value_info("k2", TensorProto.INT64, []),
        ],
        [init("three", np.array(3.0, dtype=np.float32)), init("one", np.array(1.0, dtype=np.float32))],
    )
    return save(os.path.join(ROOT, "tests", "scalar", "1"), graph)


def strings():
    """BYTES (ONNX string) tensors: an identity, and a computed copy with "!" appended
    (StringConcat, opset 20; StringNormalizer would depend on the host's locales)."""
    nodes = [
        helper.make_node("Identity", ["text"], ["same"]),
        helper.make_node("StringConcat", ["text", "bang"], ["tagged"]),
    ]
    graph = helper.make_graph(
        nodes,
        "strings",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["n"])],
        [
            helper.make_tensor_value_info("same", TensorProto.STRING, ["n"]),
            helper.make_tensor_value_info("tagged", TensorProto.STRING, ["n"]),
        ],
        [helper.make_tensor(name="bang", data_type=TensorProto.STRING, dims=[], vals=[b"!"])],
    )
    opset = [helper.make_opsetid("", 20)]
    return save(os.path.join(ROOT, "tests", "strings", "1"), graph, opset)


DTYPES = [
    ("bool", TensorProto.BOOL, np.bool_),
    ("u8", TensorProto.UINT8, np.uint8),
    ("u16", TensorProto.UINT16, np.uint16),
    ("u32", TensorProto.UINT32, np.uint32),
    ("u64", TensorProto.UINT64, np.uint64),
    ("i8", TensorProto.INT8, np.int8),
    ("i16", TensorProto.INT16, np.int16),
    ("i32", TensorProto.INT32, np.int32),
    ("i64", TensorProto.INT64, np.int64),
    ("f16", TensorProto.FLOAT16, np.float16),
    ("f32", TensorProto.FLOAT, np.float32),
    ("f64", TensorProto.DOUBLE, np.float64),
]


def dtypes():
    """One input per numeric datatype. Each output is computed, not just copied: numbers are
    doubled through Add(x, x) (Identity for the types ONNX's Add lacks), booleans negated."""
    add_types = {"u32", "u64", "i8", "i16", "i32", "i64", "f16", "f32", "f64", "u8", "u16"}
    nodes, inputs, outputs = [], [], []
    for name, proto, _ in DTYPES:
        inputs.append(helper.make_tensor_value_info(name, proto, ["n"]))
        outputs.append(helper.make_tensor_value_info(f"{name}_out", proto, ["n"]))
        if name == "bool":
            nodes.append(helper.make_node("Not", [name], [f"{name}_out"]))
        elif name in add_types:
            nodes.append(helper.make_node("Add", [name, name], [f"{name}_out"]))
    graph = helper.make_graph(nodes, "dtypes", inputs, outputs)
    return save(os.path.join(ROOT, "tests", "dtypes", "1"), graph)


def control_flow():
    """An If whose branches are subgraphs: y = x * 2 when cond, else x - 1."""
    then_graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["then_y"])],
        "then",
        [],
        [helper.make_tensor_value_info("then_y", TensorProto.FLOAT, ["n"])],
    )
    else_graph = helper.make_graph(
        [helper.make_node("Sub", ["x", "one"], ["else_y"])],
        "else",
        [],
        [helper.make_tensor_value_info("else_y", TensorProto.FLOAT, ["n"])],
    )
    nodes = [helper.make_node("If", ["cond"], ["y"], then_branch=then_graph, else_branch=else_graph)]
    graph = helper.make_graph(
        nodes,
        "control_flow",
        [
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])],
        [init("two", np.array(2.0, dtype=np.float32)), init("one", np.array(1.0, dtype=np.float32))],
    )
    return save(os.path.join(ROOT, "tests", "control_flow", "1"), graph)


def slow():
    """A Loop whose trip count is an input, so a test can make one request take as long as it
    needs (for shutdown, timeout and slow-shadow tests) without sleeping in the gateway."""
    w = (np.random.RandomState(5).normal(0, 1.0, (64, 64)) / 8.0).astype(np.float32)
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["state_in", "w"], ["m"]),
            helper.make_node("Tanh", ["m"], ["state_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("state_in", TensorProto.FLOAT, ["batch", 64]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("state_out", TensorProto.FLOAT, ["batch", 64]),
        ],
    )
    nodes = [helper.make_node("Loop", ["iterations", "", "x"], ["y"], body=body)]
    graph = helper.make_graph(
        nodes,
        "slow",
        [
            helper.make_tensor_value_info("iterations", TensorProto.INT64, []),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 64])],
        [init("w", w)],
    )
    return save(os.path.join(ROOT, "tests", "slow", "1"), graph)


def fixed():
    """Fixed dimensions only ([2, 3]), for rank and dimension mismatch errors."""
    nodes = [helper.make_node("Add", ["x", "one"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [init("one", np.array(1.0, dtype=np.float32))],
    )
    return save(os.path.join(ROOT, "tests", "fixed", "1"), graph)


def mirror():
    """Three versions sharing credit-scoring's signature, for shadow tests: v1 answers like
    credit-scoring v1, v2 is slow (a 64-step Loop per request before the same head), v3 always
    fails at run time (Gather with an index past the end)."""
    rng = np.random.RandomState(7)
    w1 = rng.normal(0, 0.6, (8, 16)).astype(np.float32)
    b1 = rng.normal(0, 0.1, (16,)).astype(np.float32)
    w2 = rng.normal(0, 0.6, (16, 2)).astype(np.float32)
    head = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
    ]
    inits = [init("w1", w1), init("b1", b1), init("w2", w2)]
    outputs = [
        helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
        helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2]),
    ]
    inputs = [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 8])]
    paths = []
    # v1: the head straight on the features.
    graph = helper.make_graph([helper.make_node("Identity", ["features"], ["x"])] + head, "mirror_v1", inputs, outputs, inits)
    paths.append(save(os.path.join(ROOT, "tests", "mirror", "1"), graph))
    # v2: many identity-like steps first (x -> x * 1 + 0 through a Loop), then the same head.
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["s_in", "eye"], ["s_out"]),
            helper.make_node("Identity", ["c_in"], ["c_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("s_in", TensorProto.FLOAT, ["batch", 8]),
        ],
        [
            helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("s_out", TensorProto.FLOAT, ["batch", 8]),
        ],
    )
    slow_nodes = [helper.make_node("Loop", ["steps", "", "features"], ["x"], body=body)] + head
    slow_inits = inits + [init("eye", np.eye(8, dtype=np.float32)), init("steps", np.array(200000, dtype=np.int64))]
    graph = helper.make_graph(slow_nodes, "mirror_v2", inputs, outputs, slow_inits)
    paths.append(save(os.path.join(ROOT, "tests", "mirror", "2"), graph))
    # v3: Gather index 100 on an axis of size 8: fails on every run.
    fail_nodes = [helper.make_node("Gather", ["features", "bad"], ["g"], axis=1),
                  helper.make_node("Identity", ["features"], ["x"])] + head
    fail_nodes.append(helper.make_node("Identity", ["g"], ["g_out"]))
    graph = helper.make_graph(fail_nodes, "mirror_v3", inputs,
                              outputs + [helper.make_tensor_value_info("g_out", TensorProto.FLOAT, ["batch", 1])],
                              inits + [init("bad", np.array([100], dtype=np.int64))])
    paths.append(save(os.path.join(ROOT, "tests", "mirror", "3"), graph))
    return paths


def norank():
    """An input declared without any shape (unknown rank): ONNX Runtime reports it like a 0-d
    tensor, but runs it at any rank; the gateway must accept any shape."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "norank",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    # The checker insists on shapes for graph outputs; ONNX Runtime does not.
    return save(os.path.join(ROOT, "tests", "norank", "1"), graph, check=False)


def embed():
    """BERT-style token embedding: int64 token ids [batch, seq] index a 16-row table (Gather),
    mean over the sequence gives [batch, 4]. An id outside [-16, 15] makes ONNX Runtime refuse
    the run (INVALID_ARGUMENT): the request's fault, not the server's."""
    table = (np.arange(64, dtype=np.float32).reshape(16, 4) / 10.0).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["emb"], axis=0),
        helper.make_node("ReduceMean", ["emb"], ["pooled"], axes=[1], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "embed",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", 4])],
        [init("table", table)],
    )
    return save(os.path.join(ROOT, "tests", "embed", "1"), graph)


def broken():
    """Not an ONNX file at all: loading it must fail with its path and the reason."""
    path = os.path.join(ROOT, "tests", "broken", "1", "model.onnx")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"this is not an onnx model\n")
    return path


V2_TYPES = {
    np.dtype(np.bool_): "BOOL", np.dtype(np.uint8): "UINT8", np.dtype(np.uint16): "UINT16",
    np.dtype(np.uint32): "UINT32", np.dtype(np.uint64): "UINT64", np.dtype(np.int8): "INT8",
    np.dtype(np.int16): "INT16", np.dtype(np.int32): "INT32", np.dtype(np.int64): "INT64",
    np.dtype(np.float16): "FP16", np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64",
}


def two_features():
    """Two versions of a classifier of 8 features that reads only some of them, for the
    explanation and fairness tests: v1 approves (class 1) when x0 + x1 > 0; v2 when
    x0 + x1 + 10 * x2 > 0, so it also leans on feature 2 (a segment sent with a low x2 is
    approved far less by v2 than by v1)."""
    paths = []
    for version, weights in ((1, [1.0, 1.0]), (2, [1.0, 1.0, 10.0])):
        coeffs = np.zeros((8,), dtype=np.float32)
        coeffs[: len(weights)] = weights
        w = (4.0 * np.stack([-coeffs, coeffs], axis=1)).astype(np.float32)  # [8, 2]
        nodes = [
            helper.make_node("MatMul", ["features", "w"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
            helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
        ]
        graph = helper.make_graph(
            nodes,
            f"two_features_v{version}",
            [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 8])],
            [
                helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
                helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2]),
            ],
            [init("w", w)],
        )
        paths.append(save(os.path.join(ROOT, "tests", "two_features", str(version)), graph))
    return paths


def v2_tensor(name, array):
    array = np.asarray(array)
    if array.dtype.kind in ("U", "O", "S"):
        datatype, data = "BYTES", [str(v) for v in array.flatten().tolist()]
    else:
        datatype, data = V2_TYPES[array.dtype], array.flatten().tolist()
    return {"name": name, "datatype": datatype, "shape": list(array.shape), "data": data}


def reference(path, model, version, inputs):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    outputs = session.run(names, inputs)
    return {
        "model": model,
        "version": version,
        "inputs": [v2_tensor(k, v) for k, v in inputs.items()],
        "outputs": [v2_tensor(n, o) for n, o in zip(names, outputs)],
    }


def main():
    rng = np.random.RandomState(42)
    refs = []
    features = rng.normal(0, 1, (4, 8)).astype(np.float32)
    for version in (1, 2, 3):
        path = credit_scoring(version)
        refs.append(reference(path, "credit-scoring", version, {"features": features}))
    path = dense()
    refs.append(reference(path, "dense", 1, {"input": rng.normal(0, 1, (2, 256)).astype(np.float32)}))
    path = multi_io()
    refs.append(reference(path, "multi_io", 1, {
        "x": rng.normal(0, 1, (2, 3)).astype(np.float32),
        "y": rng.normal(0, 1, (2, 3)).astype(np.float32),
        "n": np.array([1, -5, 7, 1 << 40], dtype=np.int64),
    }))
    path = scalar()
    refs.append(reference(path, "scalar", 1, {
        "x": np.array(1.5, dtype=np.float32), "k": np.array(-12, dtype=np.int64)}))
    path = strings()
    refs.append(reference(path, "strings", 1, {
        "text": np.array(["hello", "Grüße", "", "a b\"c"], dtype=object)}))
    path = dtypes()
    dtype_inputs = {}
    for name, _, np_type in DTYPES:
        if np_type is np.bool_:
            dtype_inputs[name] = np.array([True, False, True])
        elif np.issubdtype(np_type, np.floating):
            dtype_inputs[name] = np.array([1.5, -2.25, 1000.0], dtype=np_type)
        elif np.issubdtype(np_type, np.signedinteger):
            dtype_inputs[name] = np.array([1, -2, 3], dtype=np_type)
        else:
            dtype_inputs[name] = np.array([1, 2, 3], dtype=np_type)
    refs.append(reference(path, "dtypes", 1, dtype_inputs))
    path = control_flow()
    for cond in (True, False):
        refs.append(reference(path, "control_flow", 1, {
            "cond": np.array(cond), "x": np.array([1.0, 2.5, -3.0], dtype=np.float32)}))
    path = slow()
    refs.append(reference(path, "slow", 1, {
        "iterations": np.array(3, dtype=np.int64), "x": rng.normal(0, 1, (2, 64)).astype(np.float32)}))
    path = fixed()
    refs.append(reference(path, "fixed", 1, {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}))
    mirror()
    path = norank()
    refs.append(reference(path, "norank", 1, {"x": np.array([[-1.0, 2.0], [3.0, -4.0]], dtype=np.float32)}))
    path = embed()
    refs.append(reference(path, "embed", 1, {"input_ids": np.array([[1, 2, 3], [15, 0, -1]], dtype=np.int64)}))
    broken()
    two_features()
    with open(os.path.join(ROOT, "tests", "reference.json"), "w") as f:
        f.write("[\n" + ",\n".join(json.dumps(r) for r in refs) + "\n]\n")


if __name__ == "__main__":
    main()
