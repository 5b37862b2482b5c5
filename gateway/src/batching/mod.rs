//! One bounded queue per served version, and the loop each worker thread runs on it: take a
//! request, gather compatible ones (up to `max_batch_size` rows), drop those whose caller went
//! away or whose deadline passed, run once, split the outputs back.
//!
//! **A bad request costs its batch-mates little.** When the runtime refuses a batch because of
//! what a request carried (`RunError::Refused`: an index out of range, shapes the graph cannot
//! take), the batch is split in halves and each half runs again, recursively, until the
//! refused requests are alone: one bad request among `n` costs its batch-mates at most
//! 2·⌈log₂ n⌉ extra runs (6 for 8, 10 for 32), where retrying every request on its own cost
//! `n`. A run that fails for any other reason (`RunError::Failed`: the model or the runtime)
//! is not the inputs' fault: every request of the batch gets that error, without retries.
//!
//! **Waiting for batch-mates, only when some are coming.** Everything already queued joins at
//! once. Beyond that the worker waits (at most `max_queue_delay`) only while more requests have
//! been routed to this version, and not yet answered, than it holds: they are being decoded
//! and will arrive in microseconds. A request stops counting the moment its worker answers it
//! (not when its handler returns), so a worker never waits for a request it has answered. A lone client therefore never waits for company that cannot come (its latency
//! stays that of an unbatched run), while concurrent clients fill batches. And never longer
//! than a run takes (a moving average of this worker's recent runs): waiting is worth it only
//! while it costs less than the separate run it saves, so a model that runs in microseconds
//! waits microseconds, however large `max_queue_delay` is.
//!
//! **Traces.** A sampled request's job carries its `JobTrace` (every other job carries `None`,
//! so the batch path tests one `Option` per job): the worker records its `queue` span when it is
//! answered, and one `onnxruntime.run` span per run that holds a sampled request, under the
//! first such request and linking the others; each answered sampled request learns that run's
//! span (`Completed::run_span`) to link to it. Spans reuse the instants the loop already reads.
//!
//! **Yielding under overload.** While the gateway is refusing requests for want of capacity
//! (`admission::refusing`), a worker gives up the core after every run of 250 µs or more, so
//! the async thread that writes the refusals runs before the next run rather than after it or
//! at the next scheduler tick (refusals' p99 under 3× overload, one core: 1.1 ms against 3.7).
//! Not otherwise: yielding after every long run cost 4-20% of throughput when nothing was
//! refused.
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

use crate::admission;
use crate::telemetry::VersionMetrics;
use crate::tensor::Tensor;
use crate::trace::{JobTrace, SpanLink};

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
    fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RunError>;
}

/// Why a run failed, as the runtime classified it (kept typed across the worker boundary, so
/// that a request's fault is never counted as the server's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// The runtime refused what a request carried (ONNX Runtime's INVALID_ARGUMENT, or a
    /// shape its graph cannot take): the client's fault.
    #[error("{0}")]
    Refused(String),
    /// The model or the runtime failed: not the client's fault.
    #[error("{0}")]
    Failed(String),
}

/// A request's outputs and what it cost.
#[derive(Debug)]
pub struct Completed {
    pub outputs: Vec<Tensor>,
    pub queue_time: Duration,
    pub inference_time: Duration,
    pub batch_rows: usize,
    /// The `onnxruntime.run` span of the run that answered a sampled request.
    pub run_span: Option<SpanLink>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InferError {
    #[error("the queue for this model version is full ({capacity} requests waiting)")]
    QueueFull { capacity: usize },
    #[error("the request waited past its deadline")]
    TimedOut,
    /// The runtime refused this request's inputs (see `RunError::Refused`).
    #[error("the model refused the inputs: {reason}")]
    Refused { reason: String },
    #[error("inference failed: {reason}")]
    Failed { reason: String },
    #[error("this model version is shutting down")]
    Closed,
    /// A remote version's call failed (`upstream`).
    #[error("{reason}")]
    Upstream { failure: crate::upstream::Failure, reason: String },
}

struct Job {
    inputs: Arc<Vec<Tensor>>,
    /// Rows along dim 0, or `None` when the request cannot share a run.
    rows: Option<usize>,
    enqueued_at: Instant,
    deadline: Instant,
    reply: oneshot::Sender<Result<Completed, InferError>>,
    /// The request's announcement, withdrawn when the worker answers it (or drops it), so
    /// the batch former never waits for a request it has already answered.
    _expected: Expected,
    /// Sampled requests only: where their `queue` and `onnxruntime.run` spans go.
    trace: Option<JobTrace>,
}

/// The sending side of a version's queue; cheap to clone.
#[derive(Clone)]
pub struct Queue {
    tx: Sender<Job>,
    capacity: usize,
    coming: Arc<AtomicUsize>,
}

/// Held while a request routed to this version is on its way to (or in) the queue; the worker
/// drops it when it answers the request.
pub struct Expected(Option<Arc<AtomicUsize>>);

impl Expected {
    /// An announcement nobody waits on (a remote version has no batch former).
    pub fn none() -> Expected {
        Expected(None)
    }
}

impl Drop for Expected {
    fn drop(&mut self) {
        if let Some(coming) = &self.0 {
            coming.fetch_sub(1, Ordering::Relaxed);
        }
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
    /// Queues `inputs` (validated, in signature order) and waits for the outputs; `expected`
    /// is the request's announcement (`expect`). Fails at once when the queue is full. The
    /// caller bounds the wait by its deadline (`Deadline::bound`); the worker skips the request
    /// once `deadline` has passed.
    pub async fn infer(
        &self,
        inputs: Arc<Vec<Tensor>>,
        deadline: Instant,
        expected: Expected,
    ) -> Result<Completed, InferError> {
        self.infer_traced(inputs, deadline, expected, None).await
    }

    /// `infer` for a request that may be sampled: `trace` (`None` when it is not) receives its
    /// `queue` and `onnxruntime.run` spans.
    pub async fn infer_traced(
        &self,
        inputs: Arc<Vec<Tensor>>,
        deadline: Instant,
        expected: Expected,
        trace: Option<JobTrace>,
    ) -> Result<Completed, InferError> {
        let (reply, answer) = oneshot::channel();
        let rows = rows(&inputs);
        let enqueued_at = Instant::now();
        let job = Job { inputs, rows, enqueued_at, deadline, reply, _expected: expected, trace };
        self.tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => {
                admission::refused();
                InferError::QueueFull { capacity: self.capacity }
            }
            TrySendError::Disconnected(_) => InferError::Closed,
        })?;
        match answer.await {
            Ok(result) => result,
            Err(_) => Err(InferError::Failed { reason: "the worker stopped before answering".to_string() }),
        }
    }

    /// Requests waiting now.
    pub fn depth(&self) -> usize {
        self.tx.len()
    }

    /// Announces a request routed to this version; hold the guard until it is answered.
    pub fn expect(&self) -> Expected {
        self.coming.fetch_add(1, Ordering::Relaxed);
        Expected(Some(self.coming.clone()))
    }
}

/// A run long enough to keep refusals waiting: after one, while the gateway is refusing
/// requests, the worker yields the core (`serve`).
const LONG_RUN: Duration = Duration::from_micros(250);

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
    // Before any run, a batch may wait the whole `max_queue_delay`.
    let mut typical_run: Option<Duration> = None;
    loop {
        let first = match held.pop_front() {
            Some(job) => job,
            None => match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        let batch = if batchable && policy.max_batch_size > 1 && first.rows.is_some() {
            let wait = typical_run.map_or(policy.max_queue_delay, |t| t.min(policy.max_queue_delay));
            gather(first, &rx, &mut held, &policy, wait, &coming)
        } else {
            vec![first]
        };
        let started = Instant::now();
        run_batch(batch, runner, metrics);
        let took = started.elapsed();
        typical_run = Some(moving_average(typical_run, took));
        if took >= LONG_RUN && admission::refusing() {
            // The async thread that writes refusals may be waiting behind this run: give it
            // the core before the next one (see `admission`).
            std::thread::yield_now();
        }
    }
}

/// How long this worker's runs take lately: an exponential moving average, weight 1/8 on the
/// newest run; the first run stands alone.
fn moving_average(previous: Option<Duration>, run: Duration) -> Duration {
    previous.map_or(run, |p| (p * 7 + run) / 8)
}

/// Adds compatible requests to `first` until the batch is full or `wait` is over. Requests
/// that do not fit wait in `held` for the next round.
fn gather(
    first: Job,
    rx: &Receiver<Job>,
    held: &mut VecDeque<Job>,
    policy: &BatchPolicy,
    wait: Duration,
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
    let until = Instant::now() + wait;
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
    let live: Vec<Job> = batch.into_iter().filter_map(|job| still_wanted(job, Instant::now())).collect();
    run_together(live, runner, metrics);
}

/// Runs `jobs` as one batch and answers each with its rows. A batch the runtime refuses is
/// halved and each half run again (see the module docs); one that cannot be stacked or split
/// runs request by request.
fn run_together(jobs: Vec<Job>, runner: &mut dyn Runner, metrics: &VersionMetrics) {
    if jobs.len() <= 1 {
        for job in jobs {
            run_alone(job, runner, metrics);
        }
        return;
    }
    let row_counts: Vec<usize> = jobs.iter().map(|j| j.rows.unwrap_or(1)).collect();
    let total = row_counts.iter().try_fold(0usize, |acc, &r| acc.checked_add(r));
    let inputs: Vec<&[Tensor]> = jobs.iter().map(|j| j.inputs.as_slice()).collect();
    let (Some(total), Some(stacked)) = (total, concat(&inputs)) else {
        return jobs.into_iter().for_each(|job| run_alone(job, runner, metrics));
    };
    let started = Instant::now();
    let (result, elapsed) = timed_run(runner, &stacked, metrics, total);
    drop(stacked);
    let run_span = record_run(&jobs, started, elapsed, total, &result);
    match result {
        Ok(outputs) => match split(outputs, &row_counts) {
            Some(parts) => {
                for (job, outputs) in jobs.into_iter().zip(parts) {
                    answer(job, Ok(outputs), started, elapsed, total, run_span);
                }
            }
            // Outputs that do not carry the batch along dim 0: this model runs one by one.
            None => jobs.into_iter().for_each(|job| run_alone(job, runner, metrics)),
        },
        Err(RunError::Refused(_)) => {
            let mut first = jobs;
            let second = first.split_off(first.len() / 2);
            for half in [first, second] {
                let live = half.into_iter().filter_map(|job| still_wanted(job, Instant::now())).collect();
                run_together(live, runner, metrics);
            }
        }
        Err(failed @ RunError::Failed(_)) => {
            for job in jobs {
                answer(job, Err(failed.clone()), started, elapsed, total, run_span);
            }
        }
    }
}

fn run_alone(job: Job, runner: &mut dyn Runner, metrics: &VersionMetrics) {
    let rows = job.rows.unwrap_or(1);
    let started = Instant::now();
    let (result, elapsed) = timed_run(runner, &job.inputs, metrics, rows);
    let run_span = record_run(std::slice::from_ref(&job), started, elapsed, rows, &result);
    answer(job, result, started, elapsed, rows, run_span);
}

/// The `onnxruntime.run` span of a run, when any of its requests is sampled: a child of the
/// first sampled request, linking the other sampled ones. `None` (after one pass over the
/// jobs' `Option`s) for the usual run with no sampled request.
fn record_run(
    jobs: &[Job],
    started: Instant,
    took: Duration,
    rows: usize,
    result: &Result<Vec<Tensor>, RunError>,
) -> Option<SpanLink> {
    let mut sampled = jobs.iter().filter_map(|job| job.trace.as_ref());
    let first = sampled.next()?;
    let others = sampled.map(JobTrace::parent_link).collect();
    let error = result.as_ref().err().map(|e| match e {
        RunError::Refused(reason) => format!("refused by the runtime: {reason}"),
        RunError::Failed(reason) => reason.clone(),
    });
    Some(first.record_run(started, took, jobs.len(), rows, others, error))
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
) -> (Result<Vec<Tensor>, RunError>, Duration) {
    let started = Instant::now();
    // A panic inside the runtime must not take the worker (and every later request) with it.
    let result = catch_unwind(AssertUnwindSafe(|| runner.run(inputs)))
        .unwrap_or_else(|_| Err(RunError::Failed("the model runtime panicked".to_string())));
    let elapsed = started.elapsed();
    metrics.inference.record(elapsed.as_secs_f64());
    metrics.batch_size.record(rows as f64);
    metrics.stats.record_run(rows, elapsed);
    (result, elapsed)
}

fn answer(
    job: Job,
    result: Result<Vec<Tensor>, RunError>,
    run_started: Instant,
    elapsed: Duration,
    rows: usize,
    run_span: Option<SpanLink>,
) {
    let queue_time = run_started.saturating_duration_since(job.enqueued_at);
    if let Some(trace) = &job.trace {
        trace.record_queue(job.enqueued_at, run_started);
    }
    let run_span = job.trace.as_ref().and(run_span);
    let result = result
        .map(|outputs| Completed { outputs, queue_time, inference_time: elapsed, batch_rows: rows, run_span })
        .map_err(|e| match e {
            RunError::Refused(reason) => InferError::Refused { reason },
            RunError::Failed(reason) => InferError::Failed { reason },
        });
    let _ = job.reply.send(result);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::TensorData;

    /// Doubles its one input; refuses any negative element (the request's fault) and fails on
    /// NaN (the runtime's); records the batch size of every run that succeeded and counts every
    /// attempt.
    #[derive(Default)]
    struct Doubler {
        runs: Vec<usize>,
        attempts: usize,
    }

    impl Runner for Doubler {
        fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RunError> {
            self.attempts += 1;
            let TensorData::F32(v) = &inputs[0].data else {
                return Err(RunError::Failed("wrong type".into()));
            };
            if v.iter().any(|x| x.is_nan()) {
                return Err(RunError::Failed("NaN".into()));
            }
            if v.iter().any(|x| *x < 0.0) {
                return Err(RunError::Refused("negative input".into()));
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
        let (results, runner) = run_all_with(policy, requests);
        (results, runner.runs)
    }

    fn run_all_with(
        policy: BatchPolicy,
        requests: Vec<Arc<Vec<Tensor>>>,
    ) -> (Vec<Result<Completed, InferError>>, Doubler) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let (queue, receiver) = queue(&policy);
        let deadline = Instant::now() + Duration::from_secs(30);
        let futures: Vec<_> = requests
            .into_iter()
            .map(|r| {
                let q = queue.clone();
                rt.spawn(async move { q.infer(r, deadline, q.expect()).await })
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
            let mut runner = Doubler::default();
            serve(receiver, &mut runner, policy, true, &metrics);
            runner
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
        assert_eq!(
            results[1].as_ref().unwrap_err(),
            &InferError::Refused { reason: "negative input".into() }
        );
        assert!(results[2].is_ok());
    }

    #[test]
    fn a_refused_request_costs_its_batch_mates_a_logarithmic_number_of_runs() {
        // 16 requests, one refused: halving finds it in 1 + 2·log₂(16) = 9 runs at most
        // (retrying each request alone took 17), and the others still share runs.
        let requests = (0..16).map(|i| input(&[if i == 11 { -1.0 } else { i as f32 }])).collect();
        let (results, runner) = run_all_with(policy(16), requests);
        assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);
        assert!(matches!(results[11], Err(InferError::Refused { .. })));
        assert!(runner.attempts <= 9, "{} runs", runner.attempts);
        assert!(runner.runs.iter().any(|&rows| rows >= 8), "{:?}", runner.runs);
    }

    #[test]
    fn a_runtime_failure_answers_the_batch_without_retries() {
        let requests = vec![input(&[1.0]), input(&[f32::NAN]), input(&[3.0]), input(&[4.0])];
        let (results, runner) = run_all_with(policy(8), requests);
        assert_eq!(runner.attempts, 1);
        assert!(results.iter().all(|r| matches!(r, Err(InferError::Failed { .. }))));
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
            async move {
                let waiting = q.infer(input(&[1.0]), already_passed, q.expect());
                tokio::time::timeout_at(already_passed.into(), waiting).await
            }
        });
        // The caller gives up at its deadline; its request is still queued.
        assert!(rt.block_on(pending).unwrap().is_err());
        assert_eq!(queue.depth(), 1);
        drop(queue);
        let mut runner = Doubler::default();
        serve(receiver, &mut runner, policy(1), true, &VersionMetrics::new("test", 1));
        assert!(runner.runs.is_empty());
    }

    /// Runs a worker with a one-hour `max_queue_delay` on its own thread.
    fn patient_worker(receiver: QueueReceiver) -> std::thread::JoinHandle<Vec<usize>> {
        let p = BatchPolicy { max_queue_delay: Duration::from_secs(3600), ..policy(8) };
        std::thread::spawn(move || {
            let mut runner = Doubler::default();
            serve(receiver, &mut runner, p, true, &VersionMetrics::new("test", 1));
            runner.runs
        })
    }

    #[test]
    fn a_lone_request_never_waits_for_company() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let (queue, receiver) = queue(&policy(8));
        let worker = patient_worker(receiver);
        let deadline = Instant::now() + Duration::from_secs(30);
        // With nobody else routed here, the hour-long delay must not apply.
        let done = rt.block_on(queue.infer(input(&[1.0]), deadline, queue.expect())).unwrap();
        assert_eq!(done.batch_rows, 1);
        drop(queue);
        assert_eq!(worker.join().unwrap(), vec![1]);
    }

    #[test]
    fn an_answered_request_is_not_waited_for() {
        // One client sending request after request: the worker has answered each before the
        // next arrives, so none of them may wait out the hour-long delay for its predecessor.
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let (queue, receiver) = queue(&policy(8));
        let worker = patient_worker(receiver);
        let deadline = Instant::now() + Duration::from_secs(30);
        for i in 0..3 {
            let done = rt.block_on(queue.infer(input(&[i as f32]), deadline, queue.expect())).unwrap();
            assert_eq!(done.batch_rows, 1);
        }
        drop(queue);
        assert_eq!(worker.join().unwrap(), vec![1, 1, 1]);
    }

    #[test]
    fn a_batch_waits_for_requests_already_on_their_way() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_time().build().unwrap();
        let (queue, receiver) = queue(&policy(8));
        // Two requests routed here; the second reaches the queue only after the worker took the first.
        let (first_guard, second_guard) = (queue.expect(), queue.expect());
        let deadline = Instant::now() + Duration::from_secs(30);
        let q = queue.clone();
        let first = rt.spawn(async move { q.infer(input(&[1.0]), deadline, first_guard).await });
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
        let second = rt.block_on(queue.infer(input(&[2.0]), deadline, second_guard)).unwrap();
        let first = rt.block_on(first).unwrap().unwrap();
        assert_eq!((first.batch_rows, second.batch_rows), (2, 2));
        drop(queue);
        assert_eq!(worker.join().unwrap(), vec![2]);
    }

    #[test]
    fn a_worker_whose_runs_are_quick_waits_no_longer_than_a_run() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let (queue, receiver) = queue(&policy(8));
        let worker = patient_worker(receiver);
        let deadline = Instant::now() + Duration::from_secs(30);
        // A first run (nothing else announced, so no wait) teaches the worker its pace.
        rt.block_on(queue.infer(input(&[1.0]), deadline, queue.expect())).unwrap();
        // A request announced that never comes: an hour's max_queue_delay may not be waited
        // out for it, only about one (microsecond) run.
        let _never = queue.expect();
        let answered = rt.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(20),
                queue.infer(input(&[2.0]), deadline, queue.expect()),
            )
            .await
        });
        assert_eq!(answered.expect("answered without waiting out the delay").unwrap().batch_rows, 1);
        drop(queue);
        assert_eq!(worker.join().unwrap(), vec![1, 1]);
    }

    #[test]
    fn sampled_batch_mates_share_one_run_span_and_each_record_their_queue_wait() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let (queue, receiver) = queue(&policy(8));
        let (jobs, mut spans) = crate::trace::test_jobs(2);
        let links: Vec<SpanLink> = jobs.iter().map(JobTrace::parent_link).collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        // Two sampled requests and one unsampled, queued before the worker starts: one batch.
        let traces = [Some(jobs[0].clone()), None, Some(jobs[1].clone())];
        let pending: Vec<_> = traces
            .into_iter()
            .enumerate()
            .map(|(i, trace)| {
                let q = queue.clone();
                rt.spawn(async move { q.infer_traced(input(&[i as f32]), deadline, q.expect(), trace).await })
            })
            .collect();
        rt.block_on(async {
            while queue.depth() < 3 {
                tokio::task::yield_now().await
            }
        });
        drop(queue);
        let worker = std::thread::spawn(move || {
            let mut runner = Doubler::default();
            serve(receiver, &mut runner, policy(8), true, &VersionMetrics::new("test", 1));
            runner.runs
        });
        let done: Vec<Completed> = pending.into_iter().map(|p| rt.block_on(p).unwrap().unwrap()).collect();
        assert_eq!(worker.join().unwrap(), vec![3]);
        let mut recorded = Vec::new();
        while let Ok(span) = spans.try_recv() {
            recorded.push(span);
        }
        let runs: Vec<_> = recorded.iter().filter(|s| s.name == "onnxruntime.run").collect();
        assert_eq!(runs.len(), 1, "one run span per run");
        let run = runs[0];
        assert_eq!((run.trace_id, run.parent_span_id), (links[0].trace_id, Some(links[0].span_id)));
        assert_eq!(run.links, vec![links[1]], "the other sampled request is linked");
        let run_link = SpanLink { trace_id: run.trace_id, span_id: run.span_id };
        assert_eq!(done[0].run_span, Some(run_link));
        assert_eq!(done[1].run_span, None, "an unsampled request learns nothing");
        assert_eq!(done[2].run_span, Some(run_link));
        let queued: Vec<_> =
            recorded.iter().filter(|s| s.name == "queue").map(|s| s.parent_span_id).collect();
        assert_eq!(queued.len(), 2);
        assert!(links.iter().all(|l| queued.contains(&Some(l.span_id))));
    }

    #[test]
    fn a_full_queue_refuses_at_once() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let p = BatchPolicy { max_queue: 1, ..policy(1) };
        let (queue, _receiver) = queue(&p);
        let deadline = Instant::now() + Duration::from_secs(30);
        let q = queue.clone();
        let _first = rt.spawn(async move { q.infer(input(&[1.0]), deadline, q.expect()).await });
        rt.block_on(async {
            while queue.depth() < 1 {
                tokio::task::yield_now().await
            }
        });
        let second = rt.block_on(queue.infer(input(&[2.0]), deadline, queue.expect()));
        assert_eq!(second.unwrap_err(), InferError::QueueFull { capacity: 1 });
        // A full queue is a refusal for want of capacity: long runs now yield the core.
        assert!(admission::refusing());
    }
}
