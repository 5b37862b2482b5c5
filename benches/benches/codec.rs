//! The V2 codec: decoding JSON infer requests (credit batch 1, dense batch 8), decoding a
//! binary-extension request (dense batch 8), and encoding JSON responses of the same sizes.
//! Signatures come from the real model files, so decoding validates exactly as the gateway does.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use benches::{binary_request, inputs_for, json_request, load_session, model_file};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gateway::protocol::{DecodeLimits, OutputChoice, decode_infer, encode_infer};
use gateway::tensor::ModelSignature;

fn signature(model: &str) -> ModelSignature {
    load_session(&model_file(model, 1), 1).expect("load the model").signature().clone()
}

fn decode(c: &mut Criterion) {
    let limits = DecodeLimits::default();
    let mut group = c.benchmark_group("decode_json");
    for (model, rows) in [("credit-scoring", 1), ("dense", 8)] {
        let sig = signature(model);
        let body = json_request(&inputs_for(&sig, rows, 1)).unwrap();
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(format!("{model}/batch{rows}"), |b| {
            b.iter(|| decode_infer(black_box(&body), None, &sig, &limits).unwrap())
        });
    }
    group.finish();

    let mut group = c.benchmark_group("decode_binary");
    let sig = signature("dense");
    let (body, json_length) = binary_request(&inputs_for(&sig, 8, 1)).unwrap();
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("dense/batch8", |b| {
        b.iter(|| decode_infer(black_box(&body), Some(json_length), &sig, &limits).unwrap())
    });
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_json");
    for (model, rows) in [("credit-scoring", 1), ("dense", 8)] {
        let mut session = load_session(&model_file(model, 1), 1).unwrap();
        let inputs = inputs_for(session.signature(), rows, 1);
        let outputs = session.run(&inputs).unwrap();
        let choices: Vec<OutputChoice> =
            (0..outputs.len()).map(|index| OutputChoice { index, binary: false }).collect();
        group.bench_function(format!("{model}/batch{rows}"), |b| {
            b.iter(|| encode_infer(model, 1, Some("bench"), black_box(&outputs), &choices))
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2))
}

criterion_group! { name = benches; config = config(); targets = decode, encode }
criterion_main!(benches);
