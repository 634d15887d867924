//! Sorted set: a member → score map plus an ordered set of (score, member).

use std::cmp::Ordering;
use std::collections::BTreeSet;

use bytes::Bytes;
use hashbrown::HashMap;

/// A score with a total order (NaN is never stored).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score(pub f64);

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.partial_cmp(&other.0).unwrap_or(Ordering::Equal)
    }
}

/// Redis's sorted set: members ordered by score, then by member bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ZSet {
    pub dict: HashMap<Bytes, f64>,
    pub tree: BTreeSet<(Score, Bytes)>,
}

impl ZSet {
    pub fn len(&self) -> usize {
        self.dict.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dict.is_empty()
    }

    pub fn score(&self, m: &[u8]) -> Option<f64> {
        self.dict.get(m).copied()
    }

    /// Sets a member's score; returns the previous score.
    pub fn insert(&mut self, m: Bytes, score: f64) -> Option<f64> {
        let old = self.dict.insert(m.clone(), score);
        if let Some(o) = old {
            self.tree.remove(&(Score(o), m.clone()));
        }
        self.tree.insert((Score(score), m));
        old
    }

    pub fn remove(&mut self, m: &[u8]) -> Option<f64> {
        let (k, s) = self.dict.remove_entry(m)?;
        self.tree.remove(&(Score(s), k));
        Some(s)
    }

    /// 0-based rank in ascending order.
    pub fn rank(&self, m: &[u8]) -> Option<usize> {
        let s = self.score(m)?;
        Some(
            self.tree
                .range(..(Score(s), Bytes::copy_from_slice(m)))
                .count(),
        )
    }

    /// Members in ascending order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &(Score, Bytes)> {
        self.tree.iter()
    }

    /// Removes and returns the lowest (or highest) member.
    pub fn pop(&mut self, max: bool) -> Option<(Bytes, f64)> {
        let first = if max {
            self.tree.pop_last()
        } else {
            self.tree.pop_first()
        }?;
        self.dict.remove(&first.1);
        Some((first.1, first.0 .0))
    }
}
