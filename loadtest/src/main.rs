//! `loadtest`: a V2 load generator (placeholder until the throughput work lands).

fn main() {
    eprintln!("loadtest: not built yet");
}
