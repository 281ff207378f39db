//! The exactly labelled samples online training keeps (paper section 4.1): a uniform
//! reservoir over every complete sample seen, so that a short batch of profiling frames does
//! not make the links forget what they learned before. Each sample keeps its link views
//! (the view links learn from them) and its arrival number: the view links hold out the
//! newest block in time, so the kept samples come back in the order they arrived.

use super::view_links::ModelInput;
use crate::output::OutputValue;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Samples online training keeps at most, by default.
pub const CAPACITY: usize = 1000;

/// One kept sample: every model's exact output and link view on one frame (model order is
/// the bundle's; `views` is empty or has an empty entry where a model has no view).
#[derive(Clone, Debug, PartialEq)]
pub struct Kept {
    /// Arrival number, from 0: the sample's place in time among all seen.
    pub seq: u64,
    pub row: Vec<OutputValue>,
    pub views: Vec<Vec<f32>>,
}

/// A bounded, uniform sample of every sample pushed (Vitter's algorithm R).
pub struct Reservoir {
    capacity: usize,
    seen: u64,
    kept: Vec<Kept>,
    rng: StdRng,
}

impl Reservoir {
    /// An empty reservoir that keeps at most `capacity` samples; `seed` fixes which.
    pub fn new(capacity: usize, seed: u64) -> Self {
        Reservoir {
            capacity,
            seen: 0,
            kept: Vec::new(),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The reservoir online training keeps for links trained with `seed`: [`CAPACITY`]
    /// samples, chosen by a generator of its own (the engine's trainer and the replays of it
    /// pick the same samples for the same seed).
    pub fn online(seed: u64) -> Self {
        Reservoir::new(CAPACITY, seed ^ 0x000a_111e)
    }

    /// Offers one sample: kept while there is room, afterwards in place of a random kept one
    /// with probability `capacity / seen`.
    pub fn push(&mut self, row: Vec<OutputValue>, views: Vec<Vec<f32>>) {
        let seq = self.seen;
        self.seen += 1;
        let sample = Kept { seq, row, views };
        if self.kept.len() < self.capacity {
            self.kept.push(sample);
        } else if self.capacity > 0 {
            let at = self.rng.random_range(0..self.seen);
            if let Some(slot) = usize::try_from(at).ok().and_then(|a| self.kept.get_mut(a)) {
                *slot = sample;
            }
        }
    }

    /// Offers a batch of samples, in order (`views[s]` for `rows[s]`; missing ones empty).
    pub fn keep_batch(&mut self, rows: Vec<Vec<OutputValue>>, views: Vec<Vec<Vec<f32>>>) {
        let mut views = views.into_iter();
        for row in rows {
            self.push(row, views.next().unwrap_or_default());
        }
    }

    /// What one online training learns from: the kept samples in time order, then the batch
    /// (`views[s]` for `rows[s]`; missing ones empty) as the newest, not offered yet.
    pub fn with_batch(&self, rows: &[Vec<OutputValue>], views: &[Vec<Vec<f32>>]) -> Vec<Kept> {
        let mut out: Vec<Kept> = self.in_time_order().into_iter().cloned().collect();
        out.extend(rows.iter().enumerate().map(|(n, row)| Kept {
            seq: self.seen + n as u64,
            row: row.clone(),
            views: views.get(n).cloned().unwrap_or_default(),
        }));
        out
    }

    /// The kept samples, oldest first.
    pub fn in_time_order(&self) -> Vec<&Kept> {
        let mut out: Vec<&Kept> = self.kept.iter().collect();
        out.sort_by_key(|k| k.seq);
        out
    }

    /// Samples kept now.
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// Samples pushed so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }
}

/// The view links' inputs on labelled samples: those where every model has a vector head
/// and a view (whether the views have the lengths the links read is the links' check).
pub fn view_inputs(labelled: &[Kept]) -> Vec<Vec<ModelInput<'_>>> {
    labelled
        .iter()
        .filter_map(|k| {
            if k.views.len() != k.row.len() {
                return None;
            }
            k.row
                .iter()
                .zip(&k.views)
                .map(|(o, v)| match o {
                    OutputValue::Vector(head) if !v.is_empty() => {
                        Some(ModelInput { view: v, head })
                    }
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(x: f32) -> Vec<OutputValue> {
        vec![OutputValue::Vector(vec![x])]
    }

    #[test]
    fn keeps_everything_while_there_is_room_in_arrival_order() {
        let mut r = Reservoir::new(5, 1);
        for x in 0..4 {
            r.push(row(x as f32), vec![vec![x as f32 * 10.0]]);
        }
        let kept = r.in_time_order();
        assert_eq!(kept.len(), 4);
        assert_eq!(r.seen(), 4);
        for (x, k) in kept.iter().enumerate() {
            assert_eq!(k.seq, x as u64);
            assert_eq!(k.row, row(x as f32));
            assert_eq!(k.views, vec![vec![x as f32 * 10.0]]);
        }
    }

    #[test]
    fn stays_bounded_comes_back_in_time_order_and_samples_the_whole_stream() {
        let mut r = Reservoir::new(50, 7);
        for x in 0..5000 {
            r.push(row(x as f32), Vec::new());
        }
        assert_eq!(r.len(), 50);
        assert_eq!(r.seen(), 5000);
        let seqs: Vec<u64> = r.in_time_order().iter().map(|k| k.seq).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        // Uniform over the stream: both halves are represented (the chance that 50 uniform
        // picks all fall in one half is 2^-49).
        assert!(seqs.iter().any(|&s| s < 2500) && seqs.iter().any(|&s| s >= 2500));
        // Every kept sample is the one that arrived with its number.
        for k in r.in_time_order() {
            assert_eq!(k.row, row(k.seq as f32));
        }
    }

    #[test]
    fn a_batch_comes_after_the_kept_samples_and_only_rows_with_every_view_are_inputs() {
        let mut r = Reservoir::new(10, 3);
        r.keep_batch(vec![row(0.0), row(1.0)], vec![vec![vec![0.5]]]);
        let labelled = r.with_batch(&[row(2.0)], &[vec![vec![2.5]]]);
        let seqs: Vec<u64> = labelled.iter().map(|k| k.seq).collect();
        assert_eq!(seqs, [0, 1, 2]);
        assert_eq!(labelled[2].row, row(2.0));
        // The batch was not kept: offering it is the caller's next step.
        assert_eq!(r.seen(), 2);
        // Row 1 came without views: it is no input.
        let inputs = view_inputs(&labelled);
        assert_eq!(inputs.len(), 2);
        assert_eq!(inputs[0][0].view, [0.5]);
        assert_eq!(inputs[1][0].head, [2.0]);
    }

    #[test]
    fn a_zero_capacity_keeps_nothing() {
        let mut r = Reservoir::new(0, 0);
        r.push(row(1.0), Vec::new());
        assert!(r.is_empty());
        assert_eq!(r.seen(), 1);
    }
}
