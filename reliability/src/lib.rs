//! The gateway's reliability suite: tools that run against a release gateway started by a
//! script (by PID, on loopback) and print one PASS/FAIL line per check and a JSON summary.
//!
//! - [`soak`] (`soak` binary): a long mixed run with a reload every second, watching memory
//!   and every answer.
//!
//! Shared pieces: [`admin`] metrics and reloads, [`process`] the gateway's RSS and descriptors
//! from /proc, [`verdict`] checks.
//! Nothing here talks to anything but 127.0.0.1, and every run is bounded in time and count.

pub mod admin;
pub mod process;
pub mod soak;
pub mod verdict;
