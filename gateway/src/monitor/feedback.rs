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
    /// Which insertion this entry came from (matched against `order`).
    seq: u64,
}

/// One model's recent predictions, bounded whatever ids clients send: at capacity the oldest
/// is forgotten, and a prediction stored under an id already present replaces the older one
/// (the newest answer is the one a label for that id refers to).
pub struct Store {
    inner: Mutex<Entries>,
}

/// The entries by id, and their ids in insertion order (for forgetting the oldest). The id is
/// allocated once and shared by both. A replaced entry leaves a stale slot in `order`, which is
/// compacted away whenever `order` grows to twice the capacity, so both stay bounded.
struct Entries {
    map: HashMap<Arc<str>, Entry>,
    order: VecDeque<(Arc<str>, u64)>,
    next_seq: u64,
    /// `monitor.feedback_ttl_s` and `monitor.feedback_capacity`, as the last reload set them.
    ttl: Duration,
    capacity: usize,
}

impl Store {
    pub fn new(ttl: Duration, capacity: usize) -> Store {
        let entries = Entries {
            map: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
            ttl,
            capacity: capacity.max(1),
        };
        Store { inner: Mutex::new(entries) }
    }

    /// Keeps `prediction` under `id`. `limits` are the config's `(feedback_ttl,
    /// feedback_capacity)`, applied as they come (a reload may change them; a smaller capacity
    /// forgets the oldest predictions now).
    pub fn insert(&self, id: &str, prediction: Prediction, now: Instant, limits: (Duration, usize)) {
        let Ok(mut guard) = self.inner.lock() else { return };
        let entries = &mut *guard;
        (entries.ttl, entries.capacity) = (limits.0, limits.1.max(1));
        let capacity = entries.capacity;
        let seq = entries.next_seq;
        entries.next_seq += 1;
        if let Some(existing) = entries.map.get_mut(id) {
            *existing = Entry { prediction, at: now, labelled: false, seq };
            let id = existing_key(&entries.map, id);
            entries.order.push_back((id, seq));
        } else {
            while entries.map.len() >= capacity {
                let Some((old, old_seq)) = entries.order.pop_front() else { break };
                // Only remove the entry this slot belongs to (a replaced id has a newer slot).
                if let hash_map::Entry::Occupied(e) = entries.map.entry(old)
                    && e.get().seq == old_seq
                {
                    e.remove();
                }
            }
            let id: Arc<str> = Arc::from(id);
            entries.order.push_back((id.clone(), seq));
            entries.map.insert(id, Entry { prediction, at: now, labelled: false, seq });
        }
        if entries.order.len() >= 2 * capacity {
            let Entries { map, order, .. } = entries;
            order.retain(|(id, seq)| map.get(id).is_some_and(|e| e.seq == *seq));
        }
    }

    /// Finds the prediction for `id` and, when it has `rows` rows, marks it labelled (a second
    /// label is refused).
    pub fn take(&self, id: &str, rows: usize, now: Instant) -> Lookup {
        let Ok(mut guard) = self.inner.lock() else { return Lookup::Unknown };
        let ttl = guard.ttl;
        let Some(entry) = guard.map.get_mut(id) else { return Lookup::Unknown };
        if now.duration_since(entry.at) > ttl {
            guard.map.remove(id);
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

    /// Entries held, and slots in the insertion order (stale ones included).
    #[cfg(test)]
    fn sizes(&self) -> (usize, usize) {
        self.inner.lock().map(|g| (g.map.len(), g.order.len())).unwrap_or((0, 0))
    }
}

/// The `Arc` the map already holds for `id` (no new allocation for a repeated id).
fn existing_key(map: &HashMap<Arc<str>, Entry>, id: &str) -> Arc<str> {
    map.get_key_value(id).map_or_else(|| Arc::from(id), |(k, _)| k.clone())
}

/// How one labelled row is counted in `gateway_feedback_total{result}` (in
/// `telemetry::FEEDBACK_RESULTS` order).
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
        let limits = (Duration::from_secs(60), 10);
        let t0 = Instant::now();
        s.insert("a", p(1), t0, limits);
        assert_eq!(s.take("a", 1, t0), Lookup::Found(p(1)));
        assert_eq!(s.take("a", 1, t0), Lookup::AlreadyLabelled);
        assert_eq!(s.take("b", 1, t0), Lookup::Unknown);
    }

    #[test]
    fn old_predictions_expire() {
        let s = Store::new(Duration::from_secs(60), 10);
        let limits = (Duration::from_secs(60), 10);
        let t0 = Instant::now();
        s.insert("a", p(1), t0, limits);
        assert_eq!(s.take("a", 1, t0 + Duration::from_secs(61)), Lookup::Expired);
        assert_eq!(s.take("a", 1, t0 + Duration::from_secs(61)), Lookup::Unknown);
    }

    #[test]
    fn capacity_forgets_the_oldest() {
        let s = Store::new(Duration::from_secs(60), 2);
        let limits = (Duration::from_secs(60), 2);
        let t0 = Instant::now();
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            s.insert(id, p(i as u64), t0 + Duration::from_millis(i as u64), limits);
        }
        assert_eq!(s.sizes().0, 2);
        assert_eq!(s.take("a", 1, t0), Lookup::Unknown);
        assert_eq!(s.take("c", 1, t0), Lookup::Found(p(2)));
    }

    #[test]
    fn a_repeated_id_replaces_its_prediction_and_memory_stays_bounded() {
        let s = Store::new(Duration::from_secs(60), 4);
        let limits = (Duration::from_secs(60), 4);
        let t0 = Instant::now();
        s.insert("other", p(9), t0, limits);
        for i in 0..10_000u64 {
            s.insert("same", p(i), t0, limits);
        }
        let (entries, slots) = s.sizes();
        assert_eq!(entries, 2);
        assert!(slots < 2 * 4, "{slots} insertion slots for 2 entries");
        // The newest prediction answers the label; the other id was not pushed out.
        assert_eq!(s.take("same", 1, t0), Lookup::Found(p(9_999)));
        assert_eq!(s.take("other", 1, t0), Lookup::Found(p(9)));
    }

    #[test]
    fn a_replaced_prediction_can_be_labelled_again() {
        let s = Store::new(Duration::from_secs(60), 4);
        let limits = (Duration::from_secs(60), 4);
        let t0 = Instant::now();
        s.insert("a", p(1), t0, limits);
        assert_eq!(s.take("a", 1, t0), Lookup::Found(p(1)));
        s.insert("a", p(2), t0, limits);
        assert_eq!(s.take("a", 1, t0), Lookup::Found(p(2)));
    }

    #[test]
    fn judgements_index_the_feedback_results_in_order() {
        use crate::telemetry::FEEDBACK_RESULTS;
        for j in [
            Judgement::TruePositive,
            Judgement::FalsePositive,
            Judgement::TrueNegative,
            Judgement::FalseNegative,
            Judgement::Correct,
            Judgement::Incorrect,
        ] {
            assert_eq!(FEEDBACK_RESULTS[j as usize], j.as_str());
        }
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
