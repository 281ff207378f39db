//! [`ModelSet`]: a set of model indices stored as a bitset, for active sets of any size.

use serde::{Deserialize, Serialize};

/// A set of model indices `0..capacity`, one bit per model.
///
/// Sets compare equal when they hold the same models and have the same capacity.
/// Serialised as the sorted list of indices plus the capacity.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "ModelSetRepr", try_from = "ModelSetRepr")]
pub struct ModelSet {
    words: Vec<u64>,
    capacity: usize,
}

#[derive(Serialize, Deserialize)]
struct ModelSetRepr {
    capacity: usize,
    models: Vec<usize>,
}

impl From<ModelSet> for ModelSetRepr {
    fn from(s: ModelSet) -> Self {
        ModelSetRepr {
            capacity: s.capacity,
            models: s.iter().collect(),
        }
    }
}

impl TryFrom<ModelSetRepr> for ModelSet {
    type Error = String;
    fn try_from(r: ModelSetRepr) -> Result<Self, String> {
        let mut s = ModelSet::empty(r.capacity);
        for m in r.models {
            if m >= r.capacity {
                return Err(format!("model {m} is out of range 0..{}", r.capacity));
            }
            s.insert(m);
        }
        Ok(s)
    }
}

impl ModelSet {
    /// The empty set over `capacity` models.
    pub fn empty(capacity: usize) -> Self {
        ModelSet {
            words: vec![0; capacity.div_ceil(64)],
            capacity,
        }
    }

    /// Every model `0..capacity`.
    pub fn full(capacity: usize) -> Self {
        let mut s = Self::empty(capacity);
        for m in 0..capacity {
            s.insert(m);
        }
        s
    }

    /// The set holding `models` (each must be below `capacity`).
    ///
    /// # Panics
    /// When an index is out of range: indices come from the caller's own model list.
    pub fn from_indices(capacity: usize, models: impl IntoIterator<Item = usize>) -> Self {
        let mut s = Self::empty(capacity);
        for m in models {
            s.insert(m);
        }
        s
    }

    /// The set of bits of `mask` (bit `i` = model `i`), for enumeration over up to 64 models.
    pub fn from_mask(capacity: usize, mask: u64) -> Self {
        let mut s = Self::empty(capacity);
        if capacity > 0 {
            let keep = if capacity >= 64 {
                u64::MAX
            } else {
                (1u64 << capacity) - 1
            };
            s.words[0] = mask & keep;
        }
        s
    }

    /// How many models the set can name.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether model `m` is in the set (false when out of range).
    pub fn contains(&self, m: usize) -> bool {
        m < self.capacity && self.words[m / 64] & (1u64 << (m % 64)) != 0
    }

    /// Adds model `m`.
    ///
    /// # Panics
    /// When `m >= capacity`.
    pub fn insert(&mut self, m: usize) {
        assert!(
            m < self.capacity,
            "model {m} out of range 0..{}",
            self.capacity
        );
        self.words[m / 64] |= 1u64 << (m % 64);
    }

    /// Removes model `m` (no effect when absent or out of range).
    pub fn remove(&mut self, m: usize) {
        if m < self.capacity {
            self.words[m / 64] &= !(1u64 << (m % 64));
        }
    }

    /// A copy with model `m` added.
    pub fn with(&self, m: usize) -> Self {
        let mut s = self.clone();
        s.insert(m);
        s
    }

    /// Number of models in the set.
    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    /// Whether every model of `self` is in `other`.
    pub fn is_subset(&self, other: &ModelSet) -> bool {
        self.words
            .iter()
            .zip(other.words.iter().chain(std::iter::repeat(&0)))
            .all(|(a, b)| a & !b == 0)
    }

    /// Models in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(wi, &w)| {
            let mut bits = w;
            std::iter::from_fn(move || {
                if bits == 0 {
                    None
                } else {
                    let b = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    Some(wi * 64 + b)
                }
            })
        })
    }

    /// Models in `0..capacity` not in the set, in ascending order.
    pub fn complement_iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.capacity).filter(move |&m| !self.contains(m))
    }
}

impl std::fmt::Display for ModelSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{{")?;
        for (n, m) in self.iter().enumerate() {
            if n > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{m}")?;
        }
        write!(f, "}}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitset_over_two_hundred_models() {
        let mut s = ModelSet::empty(200);
        for m in [0, 63, 64, 127, 128, 199] {
            s.insert(m);
        }
        assert_eq!(s.len(), 6);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 63, 64, 127, 128, 199]);
        assert!(s.contains(128) && !s.contains(1) && !s.contains(500));
        s.remove(64);
        assert_eq!(s.len(), 5);
        assert_eq!(s.complement_iter().count(), 195);
        assert!(s.is_subset(&ModelSet::full(200)));
        assert!(!ModelSet::full(200).is_subset(&s));
        let json = serde_json::to_string(&s).unwrap();
        let back: ModelSet = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        assert!(serde_json::from_str::<ModelSet>(r#"{"capacity":3,"models":[3]}"#).is_err());
    }

    #[test]
    fn masks_are_truncated_to_capacity() {
        let s = ModelSet::from_mask(3, 0b1111_0101);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 2]);
        assert_eq!(s.to_string(), "{0, 2}");
    }
}
