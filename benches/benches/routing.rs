//! Routing decisions: a weighted pick (primary plus two candidates), a sticky pick from a
//! header value, and shadow sampling (one shadow at 100%, one at 10%). Pure functions: the
//! randomness is an argument, so this is the decision alone.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use gateway::routing::RoutingTable;

fn table() -> RoutingTable {
    RoutingTable::new(1, &[(2, 5.0), (4, 10.0)], &[(3, 100.0), (5, 10.0)])
        .with_headers(Some("x-user-id".into()), Some("x-model-version".into()))
}

fn pick(c: &mut Criterion) {
    let table = table();
    let mut group = c.benchmark_group("routing");
    let mut u = 0.0_f64;
    group.bench_function("pick_weighted", |b| {
        b.iter(|| {
            u = (u + 0.618_033_988_75) % 1.0;
            table.pick(None, black_box(u))
        })
    });
    let keys: Vec<String> = (0..1024).map(|i| format!("user-{i:06}")).collect();
    let mut i = 0;
    group.bench_function("pick_sticky", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            table.pick(Some(black_box(keys[i].as_bytes())), 0.5)
        })
    });
    let mut draw = 0.0_f64;
    group.bench_function("sample_shadows", |b| {
        b.iter(|| {
            table
                .sample_shadows(|| {
                    draw = (draw + 0.618_033_988_75) % 1.0;
                    draw
                })
                .count()
        })
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2))
}

criterion_group! { name = benches; config = config(); targets = pick }
criterion_main!(benches);
