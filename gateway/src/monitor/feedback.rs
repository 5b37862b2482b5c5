//! Delayed labels: recent predictions kept by request id (bounded in number and age) so a
//! ground-truth label arriving later can be joined to what the model said.

use std::collections::{HashMap, VecDeque, hash_map};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::telemetry::Role;

/// What was predicted for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub version: u64,
    pub role: Role,
    /// Per row: the predicted class, when the monitored output has classes.
    pub classes: Vec<Option<u64>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Found(Prediction),
    /// The label gives a different number of rows than the prediction had (it stays unlabelled).
    Rows(usize),
    Unknown,
    Expired,
    AlreadyLabelled,
}

struct Entry {
    prediction: Prediction,
    at: Instant,
    labelled: bool,
}

/// One model's recent predictions. At capacity the oldest is forgotten.
pub struct Store {
    ttl: Duration,
    capacity: usize,
    inner: Mutex<Entries>,
}

/// The entries by id, and their ids in insertion order (for forgetting the oldest). The id is
/// allocated once and shared by both.
type Entries = (HashMap<Arc<str>, Entry>, VecDeque<(Arc<str>, Instant)>);

impl Store {
    pub fn new(ttl: Duration, capacity: usize) -> Store {
        Store { ttl, capacity, inner: Mutex::new((HashMap::new(), VecDeque::new())) }
    }

    pub fn insert(&self, id: &str, prediction: Prediction, now: Instant) {
        let Ok(mut guard) = self.inner.lock() else { return };
        let (map, order) = &mut *guard;
        while map.len() >= self.capacity {
            let Some((old, at)) = order.pop_front() else { break };
            // Only remove the entry this queue slot belongs to (the id may have been reused).
            if let hash_map::Entry::Occupied(e) = map.entry(old)
                && e.get().at == at
            {
                e.remove();
            }
        }
        let id: Arc<str> = Arc::from(id);
        order.push_back((id.clone(), now));
        map.insert(id, Entry { prediction, at: now, labelled: false });
    }

    /// Finds the prediction for `id` and, when it has `rows` rows, marks it labelled (a second
    /// label is refused).
    pub fn take(&self, id: &str, rows: usize, now: Instant) -> Lookup {
        let Ok(mut guard) = self.inner.lock() else { return Lookup::Unknown };
        let Some(entry) = guard.0.get_mut(id) else { return Lookup::Unknown };
        if now.duration_since(entry.at) > self.ttl {
            guard.0.remove(id);
            return Lookup::Expired;
        }
        if entry.labelled {
            return Lookup::AlreadyLabelled;
        }
        if entry.prediction.classes.len() != rows {
            return Lookup::Rows(entry.prediction.classes.len());
        }
        entry.labelled = true;
        Lookup::Found(entry.prediction.clone())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().map(|g| g.0.len()).unwrap_or(0)
    }
}

/// How one labelled row is counted in `gateway_feedback_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    TruePositive,
    FalsePositive,
    TrueNegative,
    FalseNegative,
    Correct,
    Incorrect,
}

impl Judgement {
    pub fn as_str(self) -> &'static str {
        match self {
            Judgement::TruePositive => "tp",
            Judgement::FalsePositive => "fp",
            Judgement::TrueNegative => "tn",
            Judgement::FalseNegative => "fn",
            Judgement::Correct => "correct",
            Judgement::Incorrect => "incorrect",
        }
    }
}

/// Binary when label and prediction are both 0 or 1 (tp/fp/tn/fn relative to `positive`);
/// otherwise correct or incorrect.
pub fn judge(predicted: u64, label: u64, positive: u64) -> Judgement {
    if predicted <= 1 && label <= 1 && positive <= 1 {
        match (predicted == positive, label == positive) {
            (true, true) => Judgement::TruePositive,
            (true, false) => Judgement::FalsePositive,
            (false, false) => Judgement::TrueNegative,
            (false, true) => Judgement::FalseNegative,
        }
    } else if predicted == label {
        Judgement::Correct
    } else {
        Judgement::Incorrect
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: u64) -> Prediction {
        Prediction { version: v, role: Role::Primary, classes: vec![Some(1)] }
    }

    #[test]
    fn labels_join_once_then_are_refused() {
        let s = Store::new(Duration::from_secs(60), 10);
        let t0 = Instant::now();
        s.insert("a", p(1), t0);
        assert_eq!(s.take("a", 1, t0), Lookup::Found(p(1)));
        assert_eq!(s.take("a", 1, t0), Lookup::AlreadyLabelled);
        assert_eq!(s.take("b", 1, t0), Lookup::Unknown);
    }

    #[test]
    fn old_predictions_expire() {
        let s = Store::new(Duration::from_secs(60), 10);
        let t0 = Instant::now();
        s.insert("a", p(1), t0);
        assert_eq!(s.take("a", 1, t0 + Duration::from_secs(61)), Lookup::Expired);
        assert_eq!(s.take("a", 1, t0 + Duration::from_secs(61)), Lookup::Unknown);
    }

    #[test]
    fn capacity_forgets_the_oldest() {
        let s = Store::new(Duration::from_secs(60), 2);
        let t0 = Instant::now();
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            s.insert(id, p(i as u64), t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(s.len(), 2);
        assert_eq!(s.take("a", 1, t0), Lookup::Unknown);
        assert_eq!(s.take("c", 1, t0), Lookup::Found(p(2)));
    }

    #[test]
    fn binary_and_multiclass_judgements() {
        assert_eq!(judge(1, 1, 1), Judgement::TruePositive);
        assert_eq!(judge(1, 0, 1), Judgement::FalsePositive);
        assert_eq!(judge(0, 0, 1), Judgement::TrueNegative);
        assert_eq!(judge(0, 1, 1), Judgement::FalseNegative);
        assert_eq!(judge(3, 3, 1), Judgement::Correct);
        assert_eq!(judge(2, 3, 1), Judgement::Incorrect);
    }
}
