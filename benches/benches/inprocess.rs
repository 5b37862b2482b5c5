//! The gateway's own overhead per request, in-process, for the credit model at batch 1:
//!
//! - `bare_session_run`: `OnnxSession::run` on prepared tensors (the floor);
//! - `decode_run_encode`: JSON decode → the same bare run → JSON encode (the codec's share);
//! - `gateway_path/*`: JSON decode → `ServedVersion::infer` (the version's bounded queue, its
//!   ORT worker thread, the oneshot back) → JSON encode, driven from a task on a multi-thread
//!   tokio runtime exactly as an HTTP handler runs (the waiting worker parks in the reactor and
//!   is woken by the ORT thread). Variants: batching off (`max_batch_size = 1`), batching on
//!   with `max_queue_delay_us` 0, and with 50 (a lone request waits out the delay).
//!
//! The overhead figure is `gateway_path/unbatched - bare_session_run`; issue 2 aims under 20 µs.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::{inputs_for, json_request, load_session, model_file};
use criterion::{Criterion, criterion_group, criterion_main};
use gateway::batching::BatchPolicy;
use gateway::onnx::SessionOptions;
use gateway::protocol::{DecodeLimits, decode_infer, encode_infer};
use gateway::registry::{FileId, ServedVersion, VersionKey};

const MODEL: &str = "credit-scoring";

fn served(max_batch_size: usize, delay_us: u64) -> Arc<ServedVersion> {
    let path = model_file(MODEL, 1);
    let key = VersionKey {
        file: FileId::of(&path),
        path,
        instances: 1,
        policy: BatchPolicy {
            max_batch_size,
            max_queue_delay: Duration::from_micros(delay_us),
            max_queue: 1024,
        },
        options: SessionOptions::default(),
        background: false,
        remote: None,
    };
    Arc::new(ServedVersion::load(MODEL, 1, key).expect("load the version"))
}

/// One request through the gateway's path: decode, queue → worker → oneshot, encode.
async fn one_request(version: &ServedVersion, body: &[u8], limits: &DecodeLimits) -> usize {
    let request = decode_infer(body, None, &version.signature, limits).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let done = version.infer(Arc::new(request.inputs), deadline, version.expect()).await.unwrap();
    let encoded =
        encode_infer(&version.model, version.version, request.id.as_deref(), &done.outputs, &request.outputs);
    encoded.body.len()
}

fn inprocess(c: &mut Criterion) {
    let mut session = load_session(&model_file(MODEL, 1), 1).unwrap();
    let signature = session.signature().clone();
    let inputs = inputs_for(&signature, 1, 1);
    let body: Arc<[u8]> = json_request(&inputs).unwrap().into();
    let limits = DecodeLimits::default();

    let mut group = c.benchmark_group("inprocess/credit-scoring/batch1");
    group.bench_function("bare_session_run", |b| b.iter(|| session.run(&inputs).unwrap()));
    group.bench_function("decode_run_encode", |b| {
        b.iter(|| {
            let request = decode_infer(&body, None, &signature, &limits).unwrap();
            let outputs = session.run(&request.inputs).unwrap();
            encode_infer(MODEL, 1, request.id.as_deref(), &outputs, &request.outputs).body.len()
        })
    });
    drop(session);

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    for (name, max_batch_size, delay_us) in
        [("unbatched", 1, 0), ("batching_delay0", 32, 0), ("batching_delay50", 32, 50)]
    {
        let version = served(max_batch_size, delay_us);
        group.bench_function(format!("gateway_path/{name}"), |b| {
            b.iter_custom(|iters| {
                let (version, body) = (version.clone(), body.clone());
                runtime.block_on(async move {
                    tokio::spawn(async move {
                        let limits = DecodeLimits::default();
                        let started = Instant::now();
                        for _ in 0..iters {
                            std::hint::black_box(one_request(&version, &body, &limits).await);
                        }
                        started.elapsed()
                    })
                    .await
                    .unwrap()
                })
            })
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3))
}

criterion_group! { name = benches; config = config(); targets = inprocess }
criterion_main!(benches);
