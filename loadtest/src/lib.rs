//! `loadtest` as a library: the modules behind the `loadtest` binary, so other tools of the
//! workspace (the reliability suite) can drive the same closed or open loop, reuse its
//! connections, payloads and HdrHistogram recording, and read its reports, instead of keeping a
//! second load generator.
//!
//! The modules: [`cli`] flags, [`target`] URL and paths, [`payload`] and [`binary`] request
//! bodies, [`grpc`] the gRPC request and answers, [`request`] the prepared request, [`client`]
//! connections and answers, [`exchange`] one request with its timeout, [`schedule`] the open
//! loop's pacing, [`run`] the workers, [`stats`] recording, [`progress`] the live line,
//! [`report`] the result; [`replay`] is `loadtest replay` (captured traffic sent again and
//! compared). The binary (`main.rs`) owns only start-up.

pub mod binary;
pub mod cli;
pub mod client;
pub mod exchange;
pub mod grpc;
pub mod payload;
pub mod progress;
pub mod replay;
pub mod report;
pub mod request;
pub mod run;
pub mod schedule;
pub mod stats;
pub mod target;
