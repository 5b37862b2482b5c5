//! Bare `OnnxSession::run` (the gateway's wrapper: zero-copy input views, outputs copied out)
//! of the dense model at batch 1, 8 and 32 and of the credit model at batch 1, one intra-op
//! thread; dense batch 32 also with two. Throughput is in rows.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use benches::{inputs_for, load_session, model_file};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn run(c: &mut Criterion) {
    let mut group = c.benchmark_group("ort_run");
    let cases =
        [("credit-scoring", 1, 1), ("dense", 1, 1), ("dense", 8, 1), ("dense", 32, 1), ("dense", 32, 2)];
    for (model, rows, threads) in cases {
        let mut session = load_session(&model_file(model, 1), threads).unwrap();
        let inputs = inputs_for(session.signature(), rows, 1);
        group.throughput(Throughput::Elements(rows as u64));
        group.bench_function(format!("{model}/batch{rows}/threads{threads}"), |b| {
            b.iter(|| session.run(&inputs).unwrap())
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3))
}

criterion_group! { name = benches; config = config(); targets = run }
criterion_main!(benches);
