use super::*;
use crate::grpc::convert::decode_response;
use crate::grpc::proto::ModelInferResponse;
use crate::grpc::proto::model_infer_response::InferOutputTensor;
use crate::protocol::{DecodeLimits, decode_infer, decode_outputs, encode_binary_request};
use crate::tensor::{DataType, TensorData, TensorSpec};

fn tensors() -> Vec<Tensor> {
    vec![
        Tensor {
            name: "x".into(),
            shape: vec![2, 3],
            data: TensorData::F32(vec![0.5, -1.0, 2.25, 3.0, 4.0, f32::MIN_POSITIVE]),
        },
        Tensor { name: "ids".into(), shape: vec![2], data: TensorData::I64(vec![7, -9]) },
        Tensor {
            name: "s".into(),
            shape: vec![2],
            data: TensorData::Bytes(vec![b"ab".to_vec(), Vec::new()]),
        },
    ]
}

#[test]
fn a_binary_request_decodes_to_the_tensors_it_was_made_of() {
    let inputs = tensors();
    let (body, json_len) = encode_binary_request(&inputs, &["y".to_string()]);
    let signature = ModelSignature {
        inputs: vec![
            TensorSpec::new("x", DataType::F32, vec![-1, 3]),
            TensorSpec::new("ids", DataType::I64, vec![-1]),
            TensorSpec::new("s", DataType::Bytes, vec![-1]),
        ],
        outputs: vec![TensorSpec::new("y", DataType::F32, vec![-1])],
    };
    let decoded = decode_infer(&body, Some(json_len), &signature, &DecodeLimits::default()).unwrap();
    assert_eq!(decoded.inputs, inputs);
    assert!(decoded.outputs.iter().all(|o| o.binary), "outputs are asked for as binary");
}

#[test]
fn an_answer_decodes_binary_and_json_outputs_and_refuses_what_does_not_add_up() {
    let header = br#"{"model_name":"m","outputs":[{"name":"p","datatype":"FP32","shape":[1,2],"parameters":{"binary_data_size":8}},{"name":"label","datatype":"INT64","shape":[1],"data":[1]}]}"#;
    let mut body = header.to_vec();
    body.extend_from_slice(&0.25f32.to_le_bytes());
    body.extend_from_slice(&0.75f32.to_le_bytes());
    let outputs = decode_outputs(&body, Some(header.len()), &DecodeLimits::default()).unwrap();
    assert_eq!(outputs[0].data, TensorData::F32(vec![0.25, 0.75]));
    assert_eq!(outputs[1].data, TensorData::I64(vec![1]));

    let short = decode_outputs(&body[..body.len() - 1], Some(header.len()), &DecodeLimits::default());
    assert!(short.is_err(), "7 bytes cannot be two FP32s");
    let negative = br#"{"outputs":[{"name":"p","datatype":"FP32","shape":[-1],"data":[1]}]}"#;
    assert!(
        decode_outputs(negative, None, &DecodeLimits::default())
            .unwrap_err()
            .to_string()
            .contains("negative")
    );
}

#[test]
fn a_grpc_answer_decodes_raw_or_typed() {
    let output = |name: &str| InferOutputTensor {
        name: name.to_string(),
        datatype: "FP32".to_string(),
        shape: vec![2],
        ..Default::default()
    };
    let mut raw_bytes = Vec::new();
    for x in [1.5f32, -2.0] {
        raw_bytes.extend_from_slice(&x.to_le_bytes());
    }
    let raw = ModelInferResponse {
        outputs: vec![output("p")],
        raw_output_contents: vec![raw_bytes.into()],
        ..Default::default()
    };
    assert_eq!(decode_response(&raw).unwrap()[0].data, TensorData::F32(vec![1.5, -2.0]));
    let mut typed_output = output("p");
    typed_output.contents = Some(crate::grpc::proto::InferTensorContents {
        fp32_contents: vec![1.5, -2.0],
        ..Default::default()
    });
    let typed = ModelInferResponse { outputs: vec![typed_output], ..Default::default() };
    assert_eq!(decode_response(&typed).unwrap()[0].data, TensorData::F32(vec![1.5, -2.0]));
}

#[test]
fn remote_statuses_map_to_the_client_or_the_remote() {
    assert_eq!(http_failure(400), None, "the request's fault: passed on as 400");
    assert_eq!(http_failure(422), None);
    assert_eq!(http_failure(404), Some(Failure::Failed), "the remote lacks the model: its fault");
    assert_eq!(http_failure(429), Some(Failure::Busy));
    assert_eq!(http_failure(503), Some(Failure::Busy));
    assert_eq!(http_failure(504), Some(Failure::TimedOut));
    assert_eq!(http_failure(500), Some(Failure::Failed));
}
