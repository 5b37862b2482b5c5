//! Batch assembly: stacking 32 one-row requests of the dense model (256 FP32 each) into one
//! [32, 256] input, and splitting a [32, 16] output back into 32 one-row answers: the work a
//! worker thread adds around one batched run.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use benches::values;
use criterion::{Criterion, criterion_group, criterion_main};
use gateway::batching::{concat, split};
use gateway::tensor::{Tensor, TensorData};

const REQUESTS: usize = 32;

fn row(name: &str, width: usize, seed: u64) -> Vec<Tensor> {
    vec![Tensor { name: name.into(), shape: vec![1, width], data: TensorData::F32(values(width, seed)) }]
}

fn assemble(c: &mut Criterion) {
    let requests: Vec<Vec<Tensor>> = (0..REQUESTS).map(|i| row("input", 256, i as u64)).collect();
    let views: Vec<&[Tensor]> = requests.iter().map(Vec::as_slice).collect();
    let output = vec![Tensor {
        name: "output".into(),
        shape: vec![REQUESTS, 16],
        data: TensorData::F32(values(REQUESTS * 16, 99)),
    }];
    let counts = vec![1; REQUESTS];
    let mut group = c.benchmark_group("batching");
    group.bench_function("concat_32x1_dense", |b| b.iter(|| concat(black_box(&views)).unwrap()));
    group.bench_function("split_32x1_dense", |b| {
        b.iter_batched(|| output.clone(), |o| split(o, &counts).unwrap(), criterion::BatchSize::SmallInput)
    });
    group.bench_function("concat_and_split_32x1_dense", |b| {
        b.iter_batched(
            || output.clone(),
            |o| {
                let stacked = concat(black_box(&views)).unwrap();
                black_box(stacked);
                split(o, &counts).unwrap()
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2))
}

criterion_group! { name = benches; config = config(); targets = assemble }
criterion_main!(benches);
