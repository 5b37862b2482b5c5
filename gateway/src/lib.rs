//! The inference gateway as a library: everything the `gateway` binary runs, so tests and
//! benches drive exactly the same code.
//!
//! The data path, in module order: `protocol` (decode) → `routing` (pick) → `batching`
//! (queue/batch) → `onnx` (ONNX Runtime) → `protocol` (encode), wired by `http` and `grpc`
//! (one shared flow in `inference`, one shared in-flight limit in `admission`) over the
//! `registry` snapshot. Off to the side: `telemetry` (metrics), `admin` (control plane),
//! `config` (validated settings), `fleet` (state shared with other replicas, in Redis), `trace`
//! (spans of sampled requests, exported over OTLP).

pub mod admin;
pub mod admission;
mod app;
pub mod audit;
pub mod batching;
mod capped;
pub mod capture;
pub mod config;
pub mod deadline;
pub mod explain;
pub mod fleet;
pub mod grpc;
pub mod http;
pub mod inference;
pub mod monitor;
pub mod onnx;
pub mod protocol;
mod recently;
pub mod registry;
pub mod reload;
pub mod routing;
pub mod shadow;
pub mod source;
mod tasks;
pub mod telemetry;
pub mod tenants;
pub mod tensor;
pub mod trace;
pub mod upstream;
pub mod validation;

pub use app::{Gateway, StartError};
