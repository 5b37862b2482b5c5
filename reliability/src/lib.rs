//! The gateway's reliability suite: tools that run against a release gateway started by a
//! script (by PID, on loopback) and print one PASS/FAIL line per check and a JSON summary.
//!
//! - [`soak`] (`soak` binary): a long mixed run with a reload every second, watching memory
//!   and every answer.
//! - [`abuse`] (`abuse` binary): connection floods, slowloris, HTTP/2 rapid reset, idle
//!   HTTP/2 connections and a gRPC stream that never reads, each measured by a well-behaved
//!   client against its own unloaded baseline.
//!
//! Shared pieces: [`probe`] the well-behaved client (loadtest's closed loop), [`admin`] metrics
//! and reloads, [`process`] the gateway's RSS and descriptors from /proc, [`verdict`] checks.
//! Nothing here talks to anything but 127.0.0.1, and every run is bounded in time and count.

pub mod abuse;
pub mod admin;
pub mod probe;
pub mod process;
pub mod soak;
pub mod verdict;
