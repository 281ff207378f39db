//! Prediction with a bundle: h_{A,j} for the executed models, its uncertainty, and the loss
//! the links are predicted to make.

use super::{LinkBundle, Prediction, TargetEnsemble};
use crate::link::LinkError;
use crate::link::net::check;
use crate::link::view_links::ModelInput;
use crate::output::{
    Activation, OutputForm, OutputValue, TaskKind, activate, entropy, strip_end, wer,
};

impl LinkBundle {
    /// h_{A,j} itself: the combined value and its uncertainty.
    pub(super) fn combine(
        &self,
        te: &TargetEnsemble,
        j: usize,
        active: &[(usize, &OutputValue)],
    ) -> Result<(OutputValue, f64), LinkError> {
        let spec = &self.models[j].spec;
        match spec.form {
            OutputForm::Vector { .. } => {
                let mut zs = Vec::with_capacity(active.len());
                for &(i, v) in active {
                    if let Some(l) = self.link(i, j) {
                        zs.push((i, l.net.logits(v)?));
                    }
                }
                let parts: Vec<(usize, &[f32])> =
                    zs.iter().map(|(i, z)| (*i, z.as_slice())).collect();
                let value = te.ensemble.predict(spec.task, &parts)?;
                let unc = match Activation::for_task(spec.task) {
                    Activation::Softmax => entropy(&value),
                    Activation::Sigmoid => {
                        value.iter().map(|&p| entropy(&[p, 1.0 - p])).sum::<f64>()
                            / value.len().max(1) as f64
                    }
                    Activation::Linear if zs.len() >= 2 => spread(&zs),
                    Activation::Linear => {
                        match active.iter().find(|(i, _)| self.link(*i, j).is_some()) {
                            Some(&(i, v)) => self.single_source_spread(i, j, v)?,
                            None => 0.0,
                        }
                    }
                };
                Ok((OutputValue::Vector(value), unc))
            }
            OutputForm::Sequence { end_token, .. } => {
                let mut preds = Vec::new();
                for &(i, v) in active {
                    if let Some(l) = self.link(i, j) {
                        preds.push((l.score.unwrap_or(0.0), l.net.predict(v)?));
                    }
                }
                let best = preds
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.0.total_cmp(&b.1.0))
                    .map(|(n, _)| n)
                    .ok_or(LinkError::NoSource { target: j })?;
                let tok = |v: &OutputValue| match v {
                    OutputValue::Tokens(t) => strip_end(t, Some(end_token)).to_vec(),
                    OutputValue::Vector(_) => Vec::new(),
                };
                let chosen = tok(&preds[best].1);
                let others: Vec<f64> = preds
                    .iter()
                    .enumerate()
                    .filter(|(n, _)| *n != best)
                    .map(|(_, p)| wer(&tok(&p.1), &chosen))
                    .collect();
                let unc = if others.is_empty() {
                    0.0
                } else {
                    others.iter().sum::<f64>() / others.len() as f64
                };
                Ok((preds.swap_remove(best).1, unc))
            }
        }
    }

    /// The uncertainty of a linear prediction from one source, where there is no spread
    /// between sources to measure: the squared error the link's loss head predicts on this
    /// input, brought from the standardised space the link is trained in back to the
    /// target's units (times the mean variance of its standardisation), so that it reads on
    /// the scale of [`spread`], a variance per dimension. 0 for links without a head.
    fn single_source_spread(
        &self,
        source: usize,
        target: usize,
        input: &OutputValue,
    ) -> Result<f64, LinkError> {
        let Some(l) = self.link(source, target) else {
            return Ok(0.0);
        };
        let Some(head) = &l.loss_head else {
            return Ok(0.0);
        };
        let Some(h) = l.net.hidden(input)? else {
            return Ok(0.0);
        };
        let scale = l.net.out_norm().map_or(1.0, |n| {
            n.std.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / n.std.len().max(1) as f64
        });
        Ok(f64::from(head.predict(&h)).max(0.0) * scale)
    }

    /// Predicts model `target` from the outputs of the executed models (`(model index,
    /// output)`; the target itself and models without a link are ignored).
    pub fn predict(
        &self,
        target: usize,
        active: &[(usize, &OutputValue)],
    ) -> Result<Prediction, LinkError> {
        let k = self.models.len();
        if target >= k {
            return Err(LinkError::Form(format!(
                "no model {target} (the bundle has {k})"
            )));
        }
        let mut used: Vec<(usize, &OutputValue)> = Vec::with_capacity(active.len());
        for &(i, v) in active {
            if i != target && self.link(i, target).is_some() {
                check(
                    &self.models[i].spec,
                    v,
                    &format!("output of {:?}", self.models[i].id),
                )?;
                used.push((i, v));
            }
        }
        if used.is_empty() {
            return Err(LinkError::NoSource { target });
        }
        let (value, uncertainty) = self.combine(&self.ensembles[target], target, &used)?;
        let sources: Vec<usize> = used.iter().map(|(i, _)| *i).collect();
        let score = self.ensemble_score(&sources, target);
        Ok(Prediction {
            value,
            sources,
            score,
            uncertainty,
        })
    }

    /// [`predict`](Self::predict) with the executed models' link views (`(model index,
    /// view)`): where the bundle holds view links and every source used has a view of the
    /// length they were trained on, the view links' value serves, with their held-out score;
    /// otherwise (no view links, a view missing or of another length) the paper's ensemble
    /// does. The uncertainty is the paper ensemble's either way (the view links have no
    /// measure of their own), so uncertainty-based labelling ranks frames as before.
    pub fn predict_viewed(
        &self,
        target: usize,
        active: &[(usize, &OutputValue)],
        views: &[(usize, &[f32])],
    ) -> Result<Prediction, LinkError> {
        let mut p = self.predict(target, active)?;
        let Some(vl) = &self.view_links else {
            return Ok(p);
        };
        let dims = vl.view_dims();
        let mut inputs = Vec::with_capacity(p.sources.len());
        for &i in &p.sources {
            let head = active.iter().find(|(m, _)| *m == i).map(|(_, v)| *v);
            let view = views.iter().find(|(m, _)| *m == i).map(|(_, v)| *v);
            match (head, view) {
                (Some(OutputValue::Vector(head)), Some(view))
                    if dims.get(i) == Some(&view.len()) && view.iter().all(|x| x.is_finite()) =>
                {
                    inputs.push((i, ModelInput { view, head }));
                }
                _ => return Ok(p),
            }
        }
        let want = match self.models[target].spec.form {
            OutputForm::Vector { len } => len,
            OutputForm::Sequence { .. } => return Ok(p),
        };
        if let Some(v) = vl.predict(target, &inputs)
            && v.len() == want
            && v.iter().all(|x| x.is_finite())
        {
            p.value = OutputValue::Vector(v);
            if let Some(s) = vl.held_out(&p.sources, target) {
                p.score = s;
            }
        }
        Ok(p)
    }

    /// The loss g_ij is predicted to make on `input` (its loss head), None for links without
    /// a head (sequence links, links trained without pairs).
    pub fn link_predicted_loss(
        &self,
        source: usize,
        target: usize,
        input: &OutputValue,
    ) -> Result<Option<f64>, LinkError> {
        let l = self.link_ref(source, target)?;
        check(
            &self.models[source].spec,
            input,
            &format!("output of {:?}", self.models[source].id),
        )?;
        let Some(head) = &l.loss_head else {
            return Ok(None);
        };
        Ok(l.net.hidden(input)?.map(|h| f64::from(head.predict(&h))))
    }

    /// The predicted loss of predicting `target` from the executed models: the mean of the
    /// predicted losses of the links from the active sources that have a loss head. None when
    /// none has one or an output does not fit its model. A selection policy ranks frames by
    /// it (a high value: the links are likely wrong there, worth executing the target).
    pub fn predicted_loss(&self, target: usize, active: &[(usize, &OutputValue)]) -> Option<f64> {
        let losses: Vec<f64> = active
            .iter()
            .filter(|(i, _)| *i != target)
            .filter_map(|&(i, v)| self.link_predicted_loss(i, target, v).ok().flatten())
            .collect();
        (!losses.is_empty()).then(|| losses.iter().sum::<f64>() / losses.len() as f64)
    }
}

/// The variance of the sources' pre-activation outputs, averaged over dimensions (0 with one
/// source).
fn spread(zs: &[(usize, Vec<f32>)]) -> f64 {
    if zs.len() < 2 {
        return 0.0;
    }
    let dim = zs[0].1.len();
    let n = zs.len() as f64;
    let mut total = 0.0;
    for d in 0..dim {
        let mean = zs.iter().map(|(_, z)| z[d] as f64).sum::<f64>() / n;
        total += zs
            .iter()
            .map(|(_, z)| (z[d] as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
    }
    total / dim.max(1) as f64
}

/// Activation of a task's raw values (re-exported for callers that combine outputs).
pub fn activated(task: TaskKind, mut z: Vec<f32>) -> Vec<f32> {
    activate(Activation::for_task(task), &mut z);
    z
}
