//! The CPU priority of a version's worker threads, so that model runs never starve the async
//! threads that read, refuse and answer requests.
//!
//! - **Shadow-only versions** run at Linux's idle class (`SCHED_IDLE`): only on CPU time
//!   nothing else wants.
//! - **Versions whose runs are long** (`STREAK` runs in a row over `LONG_RUN`, 750 µs) lower
//!   their worker threads to nice `LONG_RUN_NICE` (10). Linux shares a busy core between
//!   runnable threads by weight; at equal weight an async thread that wakes behind a model run of
//!   a millisecond or more waits for its turn of the core, so under overload even the 503 that
//!   refuses a request waited 3–4 ms (p99). At nice 10 the model thread weighs a tenth of the
//!   async thread, which then runs within a fraction of a millisecond (benches/README.md,
//!   issue 11's experiments). The price is some throughput at saturation (the 1 ms test model:
//!   about 6%), because the async thread then serves requests one at a time between runs instead
//!   of in bursts; so shorter runs keep the default. A streak, not an average: one run stretched
//!   by a preemption must not lower a model whose runs are short (the dense model's 400 µs runs
//!   lost 10% of their throughput when a moving average over 500 µs did).
//! - A thread goes back to nice 0 after `STREAK` runs in a row under half of `LONG_RUN`, where
//!   the OS allows it: raising a priority needs `CAP_SYS_NICE` (or `RLIMIT_NICE`), so without
//!   it the thread stays at nice 10 (a debug log says so once).
//!
//! ONNX Runtime runs a session with `intra_op_threads = 1` on the calling thread, so the whole
//! run is covered; with more threads, its own pool threads keep their priority.

use std::time::Duration;

/// Runs longer than this, `STREAK` in a row, lower their thread's priority.
pub const LONG_RUN: Duration = Duration::from_micros(750);
/// How many runs in a row decide.
pub const STREAK: u32 = 8;
/// The nice value of a thread whose runs are long.
pub const LONG_RUN_NICE: i8 = 10;

/// One worker thread's priority as its runs go (`after_run` from the thread itself).
#[derive(Debug, Default)]
pub struct Courtesy {
    /// Runs in a row on the other side of the threshold that would change the priority.
    streak: u32,
    lowered: bool,
    /// The OS refused a change: stop asking.
    settled: bool,
}

impl Courtesy {
    /// Notes a run's duration and moves the calling thread's nice value after `STREAK` runs in
    /// a row over `LONG_RUN` (down to `LONG_RUN_NICE`) or under half of it (back to 0).
    pub fn after_run(&mut self, took: Duration) {
        if self.settled {
            return;
        }
        let crossing = if self.lowered { took < LONG_RUN / 2 } else { took > LONG_RUN };
        self.streak = if crossing { self.streak + 1 } else { 0 };
        if self.streak < STREAK {
            return;
        }
        self.streak = 0;
        if !self.lowered {
            match set_nice(LONG_RUN_NICE) {
                Ok(()) => self.lowered = true,
                Err(e) => {
                    tracing::warn!(
                        "could not lower the priority of a worker whose runs are long ({e}); it competes with the async threads"
                    );
                    self.settled = true;
                }
            }
        } else {
            match set_nice(0) {
                Ok(()) => self.lowered = false,
                Err(e) => {
                    tracing::debug!("a worker whose runs are now short stays at nice {LONG_RUN_NICE} ({e})");
                    self.settled = true;
                }
            }
        }
    }
}

/// Sets the calling thread's nice value (Linux: per thread), keeping the normal policy.
fn set_nice(nice: i8) -> Result<(), String> {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadPriorityValue, ThreadSchedulePolicy,
    };
    // thread_priority maps its 0..=99 scale onto nice 19..=-20 (see `crossplatform_for`).
    let value = ThreadPriorityValue::try_from(crossplatform_for(nice)).map_err(|e| e.to_string())?;
    let policy = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other);
    thread_priority::set_thread_priority_and_policy(
        thread_priority::thread_native_id(),
        ThreadPriority::Crossplatform(value),
        policy,
    )
    .map_err(|e| format!("{e:?}"))
}

/// The value on thread_priority's 0..=99 scale that it turns into `nice`: it computes
/// `trunc(39 · (1 − p/99)) − 20` (thread-priority 3.1, `ThreadPriority::to_posix`), so search
/// the scale for the value that lands on `nice`. The tests read the result back from the kernel.
fn crossplatform_for(nice: i8) -> u8 {
    (0u8..=99)
        .find(|&p| ((39.0f32 * (1.0 - f32::from(p) / 99.0)) as i32) - 20 == i32::from(nice))
        .unwrap_or(48)
}

/// Moves the calling thread to the idle scheduling class (Linux `SCHED_IDLE`): it runs only on
/// CPU time nothing else wants. For shadow-only versions.
pub fn idle_class() {
    use thread_priority::{NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy};
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    let native = thread_priority::thread_native_id();
    if let Err(e) = thread_priority::set_thread_priority_and_policy(native, ThreadPriority::Min, idle) {
        tracing::warn!(
            "could not lower a shadow worker's CPU priority ({e:?}); it competes with live traffic"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's nice value, as the kernel reports it.
    fn nice_now() -> i64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
        // Fields after the command's closing parenthesis; nice is field 19 of the whole line.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        rest.split_whitespace().nth(16).and_then(|v| v.parse().ok()).unwrap_or(i64::MIN)
    }

    #[test]
    fn short_runs_and_a_few_long_ones_keep_the_default_priority() {
        std::thread::spawn(|| {
            let before = nice_now();
            let mut courtesy = Courtesy::default();
            for i in 0..200 {
                // Runs like the dense model's, stretched now and then by a preemption.
                let took = if i % 4 == 0 { LONG_RUN * 3 } else { Duration::from_micros(400) };
                courtesy.after_run(took);
            }
            assert!(!courtesy.lowered);
            assert_eq!(nice_now(), before);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn long_runs_lower_the_thread_and_short_ones_raise_it_where_allowed() {
        std::thread::spawn(|| {
            let before = nice_now();
            assert!(
                before <= i64::from(LONG_RUN_NICE),
                "the tests run at nice {before}: cannot lower to {LONG_RUN_NICE}"
            );
            let mut courtesy = Courtesy::default();
            for _ in 0..STREAK - 1 {
                courtesy.after_run(Duration::from_millis(1));
            }
            assert_eq!(nice_now(), before, "a streak one run short changes nothing");
            courtesy.after_run(Duration::from_millis(1));
            assert!(courtesy.lowered);
            assert_eq!(nice_now(), i64::from(LONG_RUN_NICE), "the kernel sees the thread at nice 10");
            for _ in 0..STREAK {
                courtesy.after_run(Duration::from_micros(10));
            }
            // Back to 0 needs CAP_SYS_NICE; without it the thread stays lowered and stops asking.
            assert_eq!(nice_now(), if courtesy.lowered { i64::from(LONG_RUN_NICE) } else { 0 });
            assert!(!courtesy.lowered || courtesy.settled, "a thread left lowered has stopped asking");
        })
        .join()
        .unwrap();
    }
}
