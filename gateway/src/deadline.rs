//! The one deadline a request runs under: when it must be answered, who set it, and the one
//! message a request that misses it gets. Every wait of a request (its body, the queue, the
//! run) is bounded by `Deadline::bound`, and nothing else times a request out; the worker
//! threads read the same instant to skip requests whose caller has given up.

use std::future::Future;
use std::time::{Duration, Instant};

use futures_util::FutureExt;

use crate::batching::InferError;
use crate::protocol::ApiError;

#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Instant,
    set_by: SetBy,
}

#[derive(Debug, Clone, Copy)]
enum SetBy {
    /// `server.request_timeout_ms`, this long.
    Server(Duration),
    /// The client's own deadline (gRPC's `grpc-timeout`), sooner than the server's.
    Client,
}

/// A deadline was missed: converts into each layer's own timeout error.
#[derive(Debug, Clone, Copy)]
pub struct Missed(Deadline);

impl Deadline {
    /// `timeout` from now: the server's `request_timeout_ms`.
    pub fn after(timeout: Duration) -> Deadline {
        Deadline::after_from(Instant::now(), timeout)
    }

    /// `timeout` from `now`, a clock reading the caller already took.
    pub fn after_from(now: Instant, timeout: Duration) -> Deadline {
        Deadline { at: now + timeout, set_by: SetBy::Server(timeout) }
    }

    /// The sooner of this deadline and the client's own (`None`: the client set none).
    pub fn or_client(self, client: Option<Duration>) -> Deadline {
        match client.map(|c| Instant::now() + c) {
            Some(at) if at < self.at => Deadline { at, set_by: SetBy::Client },
            _ => self,
        }
    }

    pub fn at(&self) -> Instant {
        self.at
    }

    /// What a request that missed this deadline is told (504, DEADLINE_EXCEEDED).
    pub fn error(&self) -> ApiError {
        ApiError::TimedOut(match self.set_by {
            SetBy::Server(timeout) => {
                format!("the request did not finish within request_timeout_ms ({} ms)", timeout.as_millis())
            }
            SetBy::Client => {
                "the request did not finish within the client's deadline (grpc-timeout)".to_string()
            }
        })
    }

    /// Runs `work` until it finishes or the deadline passes, whichever comes first.
    ///
    /// Called on the runtime (its timer is registered at once). Not an `async fn`: one would
    /// hold `work` twice (as its argument and inside the timer), and the request path's
    /// futures are kilobytes, copied whole each time one is made.
    pub fn bound<T, E: From<Missed>>(
        &self,
        work: impl Future<Output = Result<T, E>>,
    ) -> impl Future<Output = Result<T, E>> {
        let missed = Missed(*self);
        tokio::time::timeout_at(self.at.into(), work).map(move |finished| match finished {
            Ok(result) => result,
            Err(_) => Err(missed.into()),
        })
    }
}

impl From<Missed> for ApiError {
    fn from(missed: Missed) -> ApiError {
        missed.0.error()
    }
}

impl From<Missed> for InferError {
    fn from(_: Missed) -> InferError {
        InferError::TimedOut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sooner_deadline_wins_and_says_who_set_it() {
        let server = Deadline::after(Duration::from_secs(5));
        let client = server.or_client(Some(Duration::from_millis(10)));
        assert!(client.at() < server.at());
        assert!(client.error().to_string().contains("grpc-timeout"), "{}", client.error());
        let later = server.or_client(Some(Duration::from_secs(60)));
        assert_eq!(later.at(), server.at());
        assert!(later.error().to_string().contains("request_timeout_ms (5000 ms)"), "{}", later.error());
    }

    #[test]
    fn bound_answers_the_deadline_error_when_work_outlives_it() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let d = Deadline::after(Duration::from_millis(1));
        let never = std::future::pending::<Result<(), ApiError>>();
        assert_eq!(rt.block_on(async { d.bound(never).await }).unwrap_err(), d.error());
        let quick = async { Ok::<_, ApiError>(7) };
        let in_time = Deadline::after(Duration::from_secs(5));
        assert_eq!(rt.block_on(async { in_time.bound(quick).await }).unwrap(), 7);
    }
}
