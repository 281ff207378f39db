//! Federated operations on one link of a bundle: its flat parameters, its gradient on local
//! samples, and a local training round (federated averaging).

use super::LinkBundle;
use crate::link::LinkError;
use crate::link::sample::{Sample, pairs_of};
use crate::output::OutputValue;
use rand::SeedableRng;
use rand::rngs::StdRng;

impl LinkBundle {
    /// Flat parameters of g_ij.
    pub fn link_params(&self, source: usize, target: usize) -> Result<Vec<f32>, LinkError> {
        Ok(self.link_ref(source, target)?.net.params())
    }

    pub fn set_link_params(
        &mut self,
        source: usize,
        target: usize,
        params: &[f32],
    ) -> Result<(), LinkError> {
        self.link_mut(source, target)?.net.set_params(params)
    }

    /// The (input, target) pairs of g_ij in the samples, after checking the link exists and
    /// the samples fit the bundle; an error when no sample holds both models.
    fn local_pairs<'a>(
        &self,
        source: usize,
        target: usize,
        samples: &'a [Sample],
    ) -> Result<(Vec<&'a OutputValue>, Vec<&'a OutputValue>), LinkError> {
        self.link_ref(source, target)?;
        self.check_samples(samples)?;
        let (x, t) = pairs_of(samples, source, target);
        if x.is_empty() {
            return Err(LinkError::NoPairs {
                from: source,
                target,
            });
        }
        Ok((x, t))
    }

    /// Gradient of g_ij's mean loss on the samples (flat, like the parameters).
    pub fn link_gradient(
        &self,
        source: usize,
        target: usize,
        samples: &[Sample],
    ) -> Result<Vec<f32>, LinkError> {
        let (x, t) = self.local_pairs(source, target, samples)?;
        self.link_ref(source, target)?.net.gradient(&x, &t)
    }

    /// Trains g_ij locally for `epochs` epochs on the samples and returns the parameter
    /// change (new - old), the update a federated client sends.
    pub fn train_round(
        &mut self,
        source: usize,
        target: usize,
        samples: &[Sample],
        epochs: usize,
    ) -> Result<Vec<f32>, LinkError> {
        let mut p = self.meta.params.clone();
        p.epochs = epochs;
        let (x, t) = self.local_pairs(source, target, samples)?;
        let l = self.link_mut(source, target)?;
        let before = l.net.params();
        let mut rng = StdRng::seed_from_u64(p.seed ^ 0x70_0d);
        l.net.fit(&x, &t, &p, &mut rng)?;
        Ok(l.net
            .params()
            .iter()
            .zip(&before)
            .map(|(a, b)| a - b)
            .collect())
    }
}
