//! Just enough of `onnx.proto` to find tensors stored outside the model file (prost skips the
//! fields not named here, so the tensors' bytes are never copied). Pure: bytes in, file names
//! out; the caller reads the file and decides what external data means.

use std::collections::BTreeSet;

use prost::Message;

#[derive(Clone, PartialEq, Message)]
struct Model {
    #[prost(message, optional, tag = "7")]
    graph: Option<Graph>,
    #[prost(message, repeated, tag = "25")]
    functions: Vec<Function>,
}

#[derive(Clone, PartialEq, Message)]
struct Graph {
    #[prost(message, repeated, tag = "1")]
    node: Vec<Node>,
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<Tensor>,
    #[prost(message, repeated, tag = "15")]
    sparse_initializer: Vec<SparseTensor>,
}

#[derive(Clone, PartialEq, Message)]
struct Function {
    #[prost(message, repeated, tag = "7")]
    node: Vec<Node>,
}

#[derive(Clone, PartialEq, Message)]
struct Node {
    #[prost(message, repeated, tag = "5")]
    attribute: Vec<Attribute>,
}

#[derive(Clone, PartialEq, Message)]
struct Attribute {
    #[prost(message, optional, tag = "5")]
    t: Option<Tensor>,
    #[prost(message, optional, tag = "6")]
    g: Option<Graph>,
    #[prost(message, repeated, tag = "10")]
    tensors: Vec<Tensor>,
    #[prost(message, repeated, tag = "11")]
    graphs: Vec<Graph>,
    #[prost(message, optional, tag = "22")]
    sparse_tensor: Option<SparseTensor>,
    #[prost(message, repeated, tag = "23")]
    sparse_tensors: Vec<SparseTensor>,
}

#[derive(Clone, PartialEq, Message)]
struct SparseTensor {
    #[prost(message, optional, tag = "1")]
    values: Option<Tensor>,
    #[prost(message, optional, tag = "2")]
    indices: Option<Tensor>,
}

#[derive(Clone, PartialEq, Message)]
struct Tensor {
    #[prost(message, repeated, tag = "13")]
    external_data: Vec<Entry>,
    /// `TensorProto.DataLocation`: 1 = EXTERNAL.
    #[prost(int32, tag = "14")]
    data_location: i32,
}

#[derive(Clone, PartialEq, Message)]
struct Entry {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(string, tag = "2")]
    value: String,
}

/// The distinct external data files the model refers to; `None` if it is not a model.
pub(super) fn locations(bytes: &[u8]) -> Option<Vec<String>> {
    let model = Model::decode(bytes).ok()?;
    let mut found = BTreeSet::new();
    if let Some(graph) = &model.graph {
        graph_files(graph, &mut found);
    }
    for function in &model.functions {
        function.node.iter().for_each(|n| node_files(n, &mut found));
    }
    Some(found.into_iter().collect())
}

fn graph_files(graph: &Graph, found: &mut BTreeSet<String>) {
    graph.initializer.iter().for_each(|t| tensor_file(t, found));
    graph.sparse_initializer.iter().for_each(|s| sparse_files(s, found));
    graph.node.iter().for_each(|n| node_files(n, found));
}

fn node_files(node: &Node, found: &mut BTreeSet<String>) {
    for a in &node.attribute {
        a.t.iter().chain(&a.tensors).for_each(|t| tensor_file(t, found));
        a.g.iter().chain(&a.graphs).for_each(|g| graph_files(g, found));
        a.sparse_tensor.iter().chain(&a.sparse_tensors).for_each(|s| sparse_files(s, found));
    }
}

fn sparse_files(sparse: &SparseTensor, found: &mut BTreeSet<String>) {
    sparse.values.iter().chain(&sparse.indices).for_each(|t| tensor_file(t, found));
}

fn tensor_file(tensor: &Tensor, found: &mut BTreeSet<String>) {
    if tensor.data_location == 1 {
        let location = tensor.external_data.iter().find(|e| e.key == "location");
        found.insert(location.map_or_else(|| "<unnamed>".to_owned(), |e| e.value.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_with_initializers(tensors: Vec<Tensor>) -> Vec<u8> {
        let graph = Graph { node: vec![], initializer: tensors, sparse_initializer: vec![] };
        Model { graph: Some(graph), functions: vec![] }.encode_to_vec()
    }

    #[test]
    fn external_data_is_found_in_the_onnx_protobuf() {
        let inline = Tensor { external_data: vec![], data_location: 0 };
        let entry = |k: &str, v: &str| Entry { key: k.into(), value: v.into() };
        let external = Tensor {
            external_data: vec![entry("location", "weights.data"), entry("offset", "0")],
            data_location: 1,
        };
        assert_eq!(locations(&model_with_initializers(vec![inline.clone()])), Some(vec![]));
        let both = model_with_initializers(vec![inline, external.clone(), external]);
        assert_eq!(locations(&both), Some(vec!["weights.data".to_owned()]));
        assert_eq!(locations(b"\xff\xff not a model"), None);
    }
}
