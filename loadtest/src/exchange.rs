//! One request on one virtual connection: reconnect when the connection was lost, send, read
//! the answer, and give up at the per-request timeout. The HTTP/1.1 connection's driver is
//! polled in the same task while a request runs, and the timeout is a per-connection watchdog
//! re-armed only when it fires, so an exchange costs no task hand-off and no timer
//! registration.

use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::time::Sleep;

use crate::client::{Driver, Sender, connect, read_outcome};
use crate::grpc;
use crate::run::Plan;
use crate::stats::{Outcome, truncate};

/// Pause after a failed connect, so a dead server does not make the generator spin.
const RECONNECT_PAUSE: Duration = Duration::from_millis(50);

/// A worker's connection and its request watchdog.
pub struct Conn {
    sender: Option<Sender>,
    /// HTTP/1.1: the connection's I/O, polled while a request runs; `None` once it has ended.
    driver: Option<Driver>,
    /// Fires at the running request's deadline. It is re-armed only when it fires, not per
    /// request, so a request costs no timer registration.
    watchdog: Pin<Box<Sleep>>,
}

impl Conn {
    pub fn new((sender, driver): (Sender, Option<Driver>), timeout: Duration) -> Self {
        Self { sender: Some(sender), driver, watchdog: Box::pin(tokio::time::sleep(timeout)) }
    }

    /// Whether the connection can take a request (an HTTP/1.1 one whose driver ended cannot).
    fn alive(&self) -> bool {
        match &self.sender {
            Some(Sender::H1(_)) => self.driver.is_some(),
            Some(Sender::H2(_)) => true,
            None => false,
        }
    }

    async fn reconnect(&mut self, plan: &Plan) -> Result<(), String> {
        self.sender = None;
        self.driver = None;
        let (sender, driver) = connect(plan.addr, plan.http2).await?;
        self.sender = Some(sender);
        self.driver = driver;
        Ok(())
    }
}

/// Sends one request (reconnecting first if the connection was lost) and reads the answer. A
/// transport failure or timeout drops the connection.
pub async fn exchange(conn: &mut Conn, plan: &Plan, rng: &mut fastrand::Rng) -> Outcome {
    if !conn.alive()
        && let Err(e) = conn.reconnect(plan).await
    {
        tokio::time::sleep(RECONNECT_PAUSE).await;
        return Outcome::Failed { status: 0, error: truncate(&e) };
    }
    let Some(sender) = &mut conn.sender else {
        return Outcome::Failed { status: 0, error: "no connection".into() };
    };
    let request = plan.template.build(rng);
    let deadline = Instant::now() + plan.timeout;
    let call = async {
        let response = sender.send(request).await?;
        if plan.grpc { grpc::read_outcome(response).await } else { read_outcome(response).await }
    };
    let error = match within(&mut conn.watchdog, &mut conn.driver, deadline, call).await {
        Some(Ok(outcome)) => return outcome,
        Some(Err(e)) => describe(&e),
        None => format!("timed out after {:?}", plan.timeout),
    };
    conn.sender = None;
    Outcome::Failed { status: 0, error: truncate(&error) }
}

/// Runs `call` to completion while polling the connection's `driver`, or gives up (`None`) at
/// `deadline`.
async fn within<F: Future>(
    watchdog: &mut Pin<Box<Sleep>>,
    driver: &mut Option<Driver>,
    deadline: Instant,
    call: F,
) -> Option<F::Output> {
    let mut call = std::pin::pin!(call);
    loop {
        tokio::select! {
            biased;
            out = &mut call => return Some(out),
            () = drive(driver) => {}
            () = watchdog.as_mut() => {
                if Instant::now() >= deadline {
                    return None;
                }
                watchdog.as_mut().reset(deadline.into());
            }
        }
    }
}

/// Polls the driver until the connection ends (then drops it, which fails any request still
/// waiting on it); pending forever when there is none.
fn drive(driver: &mut Option<Driver>) -> impl Future<Output = ()> + '_ {
    std::future::poll_fn(move |cx| {
        let ended = match driver.as_mut() {
            Some(d) => d.as_mut().poll(cx).is_ready(),
            None => return Poll::Pending,
        };
        if ended {
            *driver = None;
            return Poll::Ready(());
        }
        Poll::Pending
    })
}

/// A hyper error with its cause (hyper's own text names only the kind).
fn describe(e: &hyper::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn within_times_out_and_rearms() {
        let mut watchdog = Box::pin(tokio::time::sleep(Duration::from_millis(5)));
        let mut driver = None;
        let started = Instant::now();
        let deadline = started + Duration::from_millis(30);
        let never = std::future::pending::<()>();
        assert_eq!(within(&mut watchdog, &mut driver, deadline, never).await, None);
        assert!(started.elapsed() >= Duration::from_millis(30));
        let far = Instant::now() + Duration::from_secs(5);
        assert_eq!(within(&mut watchdog, &mut driver, far, async { 7 }).await, Some(7));
    }
}
