//! One aligned sample: every model's output on the same frame, or none where the model did not
//! run. Links and ensembles train and are scored on sequences of them (in time order).

use super::LinkError;
use super::net::check;
use crate::output::{OutputSpec, OutputValue};

/// `outputs[m]`: model m's output on one frame, None where it did not run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    pub outputs: Vec<Option<OutputValue>>,
}

impl Sample {
    pub fn new(outputs: Vec<Option<OutputValue>>) -> Self {
        Self { outputs }
    }

    /// A sample where every model ran.
    pub fn complete(outputs: impl IntoIterator<Item = OutputValue>) -> Self {
        Self::new(outputs.into_iter().map(Some).collect())
    }

    /// Number of model slots.
    pub fn len(&self) -> usize {
        self.outputs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.outputs.is_empty()
    }

    /// Model m's output, None where it did not run (or m is out of range).
    pub fn output(&self, m: usize) -> Option<&OutputValue> {
        self.outputs.get(m).and_then(Option::as_ref)
    }

    /// The outputs of models i and j when both ran.
    pub fn pair(&self, i: usize, j: usize) -> Option<(&OutputValue, &OutputValue)> {
        Some((self.output(i)?, self.output(j)?))
    }
}

impl From<Vec<Option<OutputValue>>> for Sample {
    fn from(outputs: Vec<Option<OutputValue>>) -> Self {
        Self::new(outputs)
    }
}

impl std::ops::Index<usize> for Sample {
    type Output = Option<OutputValue>;

    fn index(&self, m: usize) -> &Option<OutputValue> {
        &self.outputs[m]
    }
}

impl std::ops::IndexMut<usize> for Sample {
    fn index_mut(&mut self, m: usize) -> &mut Option<OutputValue> {
        &mut self.outputs[m]
    }
}

/// The (input, target) pairs of the samples where models i and j both ran.
pub fn pairs_of<'a>(
    samples: impl IntoIterator<Item = &'a Sample>,
    i: usize,
    j: usize,
) -> (Vec<&'a OutputValue>, Vec<&'a OutputValue>) {
    samples.into_iter().filter_map(|s| s.pair(i, j)).unzip()
}

/// Checks that every sample has one entry per model and that every present output fits its
/// model's spec, naming the first offending sample and model.
pub fn check_samples<'a>(
    models: impl Iterator<Item = (&'a str, &'a OutputSpec)> + Clone,
    samples: &[Sample],
) -> Result<(), LinkError> {
    let k = models.clone().count();
    for (n, s) in samples.iter().enumerate() {
        if s.len() != k {
            return Err(LinkError::Form(format!(
                "sample {n} has {} outputs for {k} models",
                s.len()
            )));
        }
        for ((id, spec), v) in models.clone().zip(&s.outputs) {
            if let Some(v) = v {
                check(spec, v, &format!("sample {n}, model {id:?}"))?;
            }
        }
    }
    Ok(())
}
