//! One bounded queue per served version, and the loop each worker thread runs on it: take a
//! request, gather compatible ones (up to `max_batch_size` rows), drop those whose caller went
//! away or whose deadline passed, run once, split the outputs back. A batch that fails is retried
//! request by request, so one bad request never fails its batch-mates.
//!
//! **Waiting for batch-mates, only when some are coming.** Everything already queued joins at
//! once. Beyond that the worker waits (at most `max_queue_delay`) only while more requests have
//! been routed to this version than it holds: they are being read or decoded and will arrive in
//! microseconds. A lone client therefore never waits for company that cannot come (its latency
//! stays that of an unbatched run), while concurrent clients fill batches.
//!
//! Knows nothing of ONNX Runtime: a worker hands it a `Runner`.

mod assemble;

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use tokio::sync::oneshot;

pub use assemble::{compatible, concat, rows, split};

use crate::telemetry::VersionMetrics;
use crate::tensor::Tensor;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BatchPolicy {
    /// Rows per run; 1 disables batching.
    pub max_batch_size: usize,
    /// How long the first request of a batch may wait for company.
    pub max_queue_delay: Duration,
    /// Requests waiting; beyond it `submit` fails at once.
    pub max_queue: usize,
}

/// Runs a model on inputs in its signature's order.
pub trait Runner {
    fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, String>;
}

/// A request's outputs and what it cost.
#[derive(Debug)]
pub struct Completed {
    pub outputs: Vec<Tensor>,
    pub queue_time: Duration,
    pub inference_time: Duration,
    pub batch_rows: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InferError {
    #[error("the queue for this model version is full ({capacity} requests waiting)")]
    QueueFull { capacity: usize },
    #[error("the request waited past its deadline")]
    TimedOut,
    #[error("inference failed: {reason}")]
    Failed { reason: String },
    #[error("this model version is shutting down")]
    Closed,
}

struct Job {
    inputs: Arc<Vec<Tensor>>,
    /// Rows along dim 0, or `None` when the request cannot share a run.
    rows: Option<usize>,
    enqueued_at: Instant,
    deadline: Instant,
    reply: oneshot::Sender<Result<Completed, InferError>>,
}

/// The sending side of a version's queue; cheap to clone.
#[derive(Clone)]
pub struct Queue {
    tx: Sender<Job>,
    capacity: usize,
    coming: Arc<AtomicUsize>,
}

/// Held while a request routed to this version is on its way to (or in) the queue.
pub struct Expected(Arc<AtomicUsize>);

impl Drop for Expected {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The receiving side, for the worker threads.
#[derive(Clone)]
pub struct QueueReceiver {
    rx: Receiver<Job>,
    coming: Arc<AtomicUsize>,
}

pub fn queue(policy: &BatchPolicy) -> (Queue, QueueReceiver) {
    let (tx, rx) = crossbeam_channel::bounded(policy.max_queue);
    let coming = Arc::new(AtomicUsize::new(0));
    (Queue { tx, capacity: policy.max_queue, coming: coming.clone() }, QueueReceiver { rx, coming })
}

impl Queue {
    /// Queues `inputs` (validated, in signature order) and waits for the outputs. Fails at once
    /// when the queue is full; gives up at `deadline`.
    pub async fn infer(&self, inputs: Arc<Vec<Tensor>>, deadline: Instant) -> Result<Completed, InferError> {
        let (reply, answer) = oneshot::channel();
        let rows = rows(&inputs);
        let job = Job { inputs, rows, enqueued_at: Instant::now(), deadline, reply };
        self.tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => InferError::QueueFull { capacity: self.capacity },
            TrySendError::Disconnected(_) => InferError::Closed,
        })?;
        match tokio::time::timeout_at(deadline.into(), answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => {
                Err(InferError::Failed { reason: "the worker stopped before answering".to_string() })
            }
            Err(_) => Err(InferError::TimedOut),
        }
    }

    /// Requests waiting now.
    pub fn depth(&self) -> usize {
        self.tx.len()
    }

    /// Announces a request routed to this version; hold the guard until it is answered.
    pub fn expect(&self) -> Expected {
        self.coming.fetch_add(1, Ordering::Relaxed);
        Expected(self.coming.clone())
    }
}

/// The worker loop: returns when every `Queue` is dropped and the queue is drained.
pub fn serve(
    receiver: QueueReceiver,
    runner: &mut dyn Runner,
    policy: BatchPolicy,
    batchable: bool,
    metrics: &VersionMetrics,
) {
    let QueueReceiver { rx, coming } = receiver;
    let mut held: VecDeque<Job> = VecDeque::new();
    loop {
        let first = match held.pop_front() {
            Some(job) => job,
            None => match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        let batch = if batchable && policy.max_batch_size > 1 && first.rows.is_some() {
            gather(first, &rx, &mut held, &policy, &coming)
        } else {
            vec![first]
        };
        run_batch(batch, runner, metrics);
    }
}

/// Adds compatible requests to `first` until the batch is full or the delay is over. Requests
/// that do not fit wait in `held` for the next round.
fn gather(
    first: Job,
    rx: &Receiver<Job>,
    held: &mut VecDeque<Job>,
    policy: &BatchPolicy,
    coming: &AtomicUsize,
) -> Vec<Job> {
    let max = policy.max_batch_size;
    let mut rows = first.rows.unwrap_or(1);
    let mut batch = vec![first];
    let fits = |job: &Job, rows: usize, batch: &[Job]| {
        job.rows.is_some_and(|r| rows + r <= max) && compatible(&batch[0].inputs, &job.inputs)
    };
    let mut i = 0;
    while i < held.len() && rows < max {
        if held.get(i).is_some_and(|job| fits(job, rows, &batch)) {
            if let Some(job) = held.remove(i) {
                rows += job.rows.unwrap_or(1);
                batch.push(job);
            }
        } else {
            i += 1;
        }
    }
    let until = Instant::now() + policy.max_queue_delay;
    while rows < max && held.len() < max {
        let next = match rx.try_recv() {
            Ok(job) => Ok(job),
            // Nothing queued: wait only if more requests are on their way to this version.
            Err(_) if coming.load(Ordering::Relaxed) > batch.len() + held.len() => rx.recv_deadline(until),
            Err(_) => Err(RecvTimeoutError::Timeout),
        };
        let Ok(job) = next else { break };
        if fits(&job, rows, &batch) {
            rows += job.rows.unwrap_or(1);
            batch.push(job);
        } else {
            held.push_back(job);
        }
    }
    batch
}

fn run_batch(batch: Vec<Job>, runner: &mut dyn Runner, metrics: &VersionMetrics) {
    let started = Instant::now();
    let live: Vec<Job> = batch.into_iter().filter_map(|job| still_wanted(job, started)).collect();
    if live.len() > 1 {
        let inputs: Vec<&[Tensor]> = live.iter().map(|j| j.inputs.as_slice()).collect();
        let row_counts: Vec<usize> = live.iter().map(|j| j.rows.unwrap_or(1)).collect();
        if let Some(stacked) = concat(&inputs) {
            let (result, elapsed) = timed_run(runner, &stacked, metrics, row_counts.iter().sum());
            if let Some(parts) = result.ok().and_then(|outputs| split(outputs, &row_counts)) {
                let total = row_counts.iter().sum();
                for (job, outputs) in live.into_iter().zip(parts) {
                    answer(job, Ok(outputs), started, elapsed, total);
                }
                return;
            }
        }
    }
    // One request, or a batch that could not run together: each on its own.
    for job in live {
        let rows = job.rows.unwrap_or(1);
        let run_started = Instant::now();
        let (result, elapsed) = timed_run(runner, &job.inputs, metrics, rows);
        answer(job, result, run_started, elapsed, rows);
    }
}

/// Drops a request whose caller went away; fails one whose deadline passed.
fn still_wanted(job: Job, now: Instant) -> Option<Job> {
    if job.reply.is_closed() {
        return None;
    }
    if job.deadline <= now {
        let _ = job.reply.send(Err(InferError::TimedOut));
        return None;
    }
    Some(job)
}

fn timed_run(
    runner: &mut dyn Runner,
    inputs: &[Tensor],
    metrics: &VersionMetrics,
    rows: usize,
) -> (Result<Vec<Tensor>, String>, Duration) {
    let started = Instant::now();
    // A panic inside the runtime must not take the worker (and every later request) with it.
    let result = catch_unwind(AssertUnwindSafe(|| runner.run(inputs)))
        .unwrap_or_else(|_| Err("the model runtime panicked".to_string()));
    let elapsed = started.elapsed();
    metrics.inference.record(elapsed.as_secs_f64());
    metrics.batch_size.record(rows as f64);
    metrics.stats.record_run(rows, elapsed);
    (result, elapsed)
}

fn answer(
    job: Job,
    result: Result<Vec<Tensor>, String>,
    run_started: Instant,
    elapsed: Duration,
    rows: usize,
) {
    let queue_time = run_started.saturating_duration_since(job.enqueued_at);
    let result = result
        .map(|outputs| Completed { outputs, queue_time, inference_time: elapsed, batch_rows: rows })
        .map_err(|reason| InferError::Failed { reason });
    let _ = job.reply.send(result);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::TensorData;

    /// Doubles its one input; fails on any negative element; records batch sizes.
    struct Doubler {
        runs: Vec<usize>,
    }

    impl Runner for Doubler {
        fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, String> {
            let TensorData::F32(v) = &inputs[0].data else {
                return Err("wrong type".into());
            };
            if v.iter().any(|x| *x < 0.0) {
                return Err("negative input".into());
            }
            self.runs.push(inputs[0].shape[0]);
            let data = TensorData::F32(v.iter().map(|x| x * 2.0).collect());
            Ok(vec![Tensor { name: "y".into(), shape: inputs[0].shape.clone(), data }])
        }
    }

    fn input(values: &[f32]) -> Arc<Vec<Tensor>> {
        Arc::new(vec![Tensor {
            name: "x".into(),
            shape: vec![values.len(), 1],
            data: TensorData::F32(values.to_vec()),
        }])
    }

    fn policy(max_batch_size: usize) -> BatchPolicy {
        BatchPolicy { max_batch_size, max_queue_delay: Duration::ZERO, max_queue: 64 }
    }

    /// Queues every request before the worker starts, so they are all waiting when it gathers.
    fn run_all(
        policy: BatchPolicy,
        requests: Vec<Arc<Vec<Tensor>>>,
    ) -> (Vec<Result<Completed, InferError>>, Vec<usize>) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let (queue, receiver) = queue(&policy);
        let deadline = Instant::now() + Duration::from_secs(30);
        let futures: Vec<_> = requests
            .into_iter()
            .map(|r| {
                let q = queue.clone();
                rt.spawn(async move { q.infer(r, deadline).await })
            })
            .collect();
        // Let every spawned request reach the queue before the worker starts.
        rt.block_on(async {
            while queue.depth() < futures.len() {
                tokio::task::yield_now().await
            }
        });
        drop(queue);
        let metrics = VersionMetrics::new("test", 1);
        let worker = std::thread::spawn(move || {
            let mut runner = Doubler { runs: Vec::new() };
            serve(receiver, &mut runner, policy, true, &metrics);
            runner.runs
        });
        let results = futures.into_iter().map(|f| rt.block_on(f).unwrap()).collect();
        (results, worker.join().unwrap())
    }

    #[test]
    fn concurrent_requests_share_one_run_and_get_their_own_rows() {
        let (results, runs) = run_all(policy(8), vec![input(&[1.0]), input(&[2.0, 3.0]), input(&[4.0])]);
        assert_eq!(runs, vec![4]);
        let firsts: Vec<Vec<f32>> = results
            .into_iter()
            .map(|r| match &r.unwrap().outputs[0].data {
                TensorData::F32(v) => v.clone(),
                _ => vec![],
            })
            .collect();
        assert_eq!(firsts, vec![vec![2.0], vec![4.0, 6.0], vec![8.0]]);
    }

    #[test]
    fn a_failing_request_does_not_fail_its_batch_mates() {
        let (results, _) = run_all(policy(8), vec![input(&[1.0]), input(&[-1.0]), input(&[3.0])]);
        assert!(results[0].is_ok());
        assert_eq!(results[1].as_ref().unwrap_err(), &InferError::Failed { reason: "negative input".into() });
        assert!(results[2].is_ok());
    }

    #[test]
    fn batches_never_exceed_max_batch_size() {
        let requests = (0..5).map(|i| input(&[i as f32, 1.0])).collect();
        let (results, runs) = run_all(policy(4), requests);
        assert!(results.iter().all(Result::is_ok));
        assert!(runs.iter().all(|&r| r <= 4), "{runs:?}");
        assert_eq!(runs.iter().sum::<usize>(), 10);
    }

    #[test]
    fn expired_requests_are_answered_without_running() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let (queue, receiver) = queue(&policy(1));
        let already_passed = Instant::now();
        let pending = rt.spawn({
            let q = queue.clone();
            async move { q.infer(input(&[1.0]), already_passed).await }
        });
        // The caller gives up at its deadline; its request is still queued.
        assert_eq!(rt.block_on(pending).unwrap().unwrap_err(), InferError::TimedOut);
        assert_eq!(queue.depth(), 1);
        drop(queue);
        let mut runner = Doubler { runs: Vec::new() };
        serve(receiver, &mut runner, policy(1), true, &VersionMetrics::new("test", 1));
        assert!(runner.runs.is_empty());
    }

    /// Runs a worker with a one-hour `max_queue_delay` on its own thread.
    fn patient_worker(receiver: QueueReceiver) -> std::thread::JoinHandle<Vec<usize>> {
        let p = BatchPolicy { max_queue_delay: Duration::from_secs(3600), ..policy(8) };
        std::thread::spawn(move || {
            let mut runner = Doubler { runs: Vec::new() };
            serve(receiver, &mut runner, p, true, &VersionMetrics::new("test", 1));
            runner.runs
        })
    }

    #[test]
    fn a_lone_request_never_waits_for_company() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let (queue, receiver) = queue(&policy(8));
        let worker = patient_worker(receiver);
        let _coming = queue.expect();
        let deadline = Instant::now() + Duration::from_secs(30);
        // With nobody else routed here, the hour-long delay must not apply.
        let done = rt.block_on(queue.infer(input(&[1.0]), deadline)).unwrap();
        assert_eq!(done.batch_rows, 1);
        drop((queue, _coming));
        assert_eq!(worker.join().unwrap(), vec![1]);
    }

    #[test]
    fn a_batch_waits_for_requests_already_on_their_way() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_time().build().unwrap();
        let (queue, receiver) = queue(&policy(8));
        // Two requests routed here; the second reaches the queue only after the worker took the first.
        let (first_guard, second_guard) = (queue.expect(), queue.expect());
        let deadline = Instant::now() + Duration::from_secs(30);
        let q = queue.clone();
        let first = rt.spawn(async move { q.infer(input(&[1.0]), deadline).await });
        rt.block_on(async {
            while queue.depth() == 0 {
                tokio::task::yield_now().await
            }
        });
        let worker = patient_worker(receiver);
        rt.block_on(async {
            while queue.depth() > 0 {
                tokio::task::yield_now().await
            }
        });
        let second = rt.block_on(queue.infer(input(&[2.0]), deadline)).unwrap();
        let first = rt.block_on(first).unwrap().unwrap();
        assert_eq!((first.batch_rows, second.batch_rows), (2, 2));
        drop((queue, first_guard, second_guard));
        assert_eq!(worker.join().unwrap(), vec![2]);
    }

    #[test]
    fn a_full_queue_refuses_at_once() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let p = BatchPolicy { max_queue: 1, ..policy(1) };
        let (queue, _receiver) = queue(&p);
        let deadline = Instant::now() + Duration::from_secs(30);
        let q = queue.clone();
        let _first = rt.spawn(async move { q.infer(input(&[1.0]), deadline).await });
        rt.block_on(async {
            while queue.depth() < 1 {
                tokio::task::yield_now().await
            }
        });
        let second = rt.block_on(queue.infer(input(&[2.0]), deadline));
        assert_eq!(second.unwrap_err(), InferError::QueueFull { capacity: 1 });
    }
}
