//! One model link g_ij: the architecture chosen by the output forms of its source and target
//! (section 3.4), with its input (and, for linear tasks, output) standardisation.

use super::LinkError;
use super::loss_head::LossHead;
use super::mlp::Mlp;
use super::norm::Norm;
use super::optim::RmsProp;
use super::seq::{SeqNet, vector};
use crate::output::{
    Activation, OutputForm, OutputSpec, OutputValue, TaskKind, activate, loss_and_grad,
};
use ndarray::Array2;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

/// Training hyper-parameters (section 3.6; from `LinksConfig`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainParams {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub hidden_factor: usize,
    /// Drop probability of the vec2vec hidden layer in training (paper: 0.5).
    pub dropout: f32,
    pub seed: u64,
}

impl TrainParams {
    pub fn from_config(c: &crate::config::LinksConfig) -> Self {
        Self {
            epochs: c.epochs,
            batch_size: c.batch_size.max(1),
            learning_rate: c.learning_rate,
            hidden_factor: c.hidden_factor.max(1),
            dropout: 0.5,
            seed: c.seed,
        }
    }
}

impl Default for TrainParams {
    fn default() -> Self {
        Self::from_config(&crate::config::LinksConfig::default())
    }
}

/// The architecture of a link, from the forms of its two ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    Vec2Vec,
    Seq2Vec,
    Vec2Seq,
    Seq2Seq,
}

impl Arch {
    pub fn of(src: &OutputSpec, dst: &OutputSpec) -> Self {
        match (&src.form, &dst.form) {
            (OutputForm::Vector { .. }, OutputForm::Vector { .. }) => Arch::Vec2Vec,
            (OutputForm::Sequence { .. }, OutputForm::Vector { .. }) => Arch::Seq2Vec,
            (OutputForm::Vector { .. }, OutputForm::Sequence { .. }) => Arch::Vec2Seq,
            (OutputForm::Sequence { .. }, OutputForm::Sequence { .. }) => Arch::Seq2Seq,
        }
    }
}

/// The hand-written vec2vec link.
#[derive(Clone, Debug)]
pub struct Vec2Vec {
    pub mlp: Mlp,
    pub in_norm: Norm,
    pub out_norm: Option<Norm>,
    pub task: TaskKind,
}

/// Hidden width of a vec2vec link: `hidden_factor` times the output length, at least 16 so
/// that one-dimensional targets (a count) still get a usable network.
pub fn vec2vec_hidden(hidden_factor: usize, out_len: usize) -> usize {
    (hidden_factor * out_len).max(16)
}

fn is_linear(task: TaskKind) -> bool {
    Activation::for_task(task) == Activation::Linear
}

impl Vec2Vec {
    fn matrices(
        &self,
        inputs: &[&OutputValue],
        targets: &[&OutputValue],
    ) -> Result<(Array2<f32>, Array2<f32>), LinkError> {
        let (d_in, d_out) = (self.mlp.in_dim, self.mlp.out_dim);
        let mut x = Array2::zeros((inputs.len(), d_in));
        let mut t = Array2::zeros((inputs.len(), d_out));
        for (r, (i, o)) in inputs.iter().zip(targets).enumerate() {
            let xs = x
                .row_mut(r)
                .into_slice()
                .ok_or(LinkError::Numeric("layout".into()))?;
            self.in_norm.apply(vector(i)?, xs);
            let ts = t
                .row_mut(r)
                .into_slice()
                .ok_or(LinkError::Numeric("layout".into()))?;
            match &self.out_norm {
                Some(n) => n.apply(vector(o)?, ts),
                None => ts.copy_from_slice(vector(o)?),
            }
        }
        Ok((x, t))
    }

    /// The hidden activation (after ReLU, no dropout) for one input: what a loss-prediction
    /// head reads.
    pub fn hidden(&self, input: &[f32]) -> Vec<f32> {
        let mut x = vec![0.0; self.mlp.in_dim];
        self.in_norm.apply(input, &mut x);
        let mut h = Vec::with_capacity(self.mlp.hidden);
        let mut z = vec![0.0; self.mlp.out_dim];
        self.mlp.forward_one(&x, &mut h, &mut z);
        h.iter_mut().for_each(|v| *v = v.max(0.0));
        h
    }

    /// Trains a loss-prediction head on the link's hidden activations and its per-sample
    /// training losses (in the training loss's space), with the link frozen.
    pub fn fit_loss_head(
        &self,
        inputs: &[&OutputValue],
        targets: &[&OutputValue],
        p: &TrainParams,
        rng: &mut StdRng,
    ) -> Result<LossHead, LinkError> {
        let (x, t) = self.matrices(inputs, targets)?;
        let h = self.mlp.hidden_batch(x.view());
        let mut losses = Vec::with_capacity(x.nrows());
        let (mut hid, mut z) = (Vec::new(), vec![0.0; self.mlp.out_dim]);
        let mut g = vec![0.0; self.mlp.out_dim];
        for (xr, tr) in x.rows().into_iter().zip(t.rows()) {
            let (Some(xs), Some(ts)) = (xr.to_slice(), tr.to_slice()) else {
                return Err(LinkError::Numeric("layout".into()));
            };
            self.mlp.forward_one(xs, &mut hid, &mut z);
            losses.push(loss_and_grad(self.task, &z, ts, &mut g));
        }
        Ok(LossHead::fit(
            h.view(),
            &losses,
            p.epochs,
            p.batch_size,
            rng,
        ))
    }

    /// Pre-activation output for one input, de-standardised for linear tasks.
    pub fn logits(&self, input: &[f32]) -> Vec<f32> {
        let mut x = vec![0.0; self.mlp.in_dim];
        self.in_norm.apply(input, &mut x);
        let mut h = Vec::with_capacity(self.mlp.hidden);
        let mut z = vec![0.0; self.mlp.out_dim];
        self.mlp.forward_one(&x, &mut h, &mut z);
        if let Some(n) = &self.out_norm {
            n.invert_in_place(&mut z);
        }
        z
    }
}

/// A trained (or trainable) link network.
#[allow(clippy::large_enum_variant)] // one per link; boxing would only add an indirection
pub enum LinkNet {
    Vec2Vec(Vec2Vec),
    Seq(SeqNet),
}

impl LinkNet {
    /// A fresh network for `src -> dst`, with standardisations fitted on the training pairs.
    pub fn new(
        src: &OutputSpec,
        dst: &OutputSpec,
        p: &TrainParams,
        inputs: &[&OutputValue],
        targets: &[&OutputValue],
        rng: &mut StdRng,
    ) -> Result<Self, LinkError> {
        let in_norm = match src.form {
            OutputForm::Vector { len } => {
                Some(Norm::fit(len, inputs.iter().filter_map(|v| vector(v).ok())))
            }
            OutputForm::Sequence { .. } => None,
        };
        let out_norm = match dst.form {
            OutputForm::Vector { len } if is_linear(dst.task) => Some(Norm::fit(
                len,
                targets.iter().filter_map(|v| vector(v).ok()),
            )),
            _ => None,
        };
        Self::with_norms(src, dst, p.hidden_factor, in_norm, out_norm, rng)
    }

    /// A network of the right shape with given standardisations (loading uses it).
    pub fn with_norms(
        src: &OutputSpec,
        dst: &OutputSpec,
        hidden_factor: usize,
        in_norm: Option<Norm>,
        out_norm: Option<Norm>,
        rng: &mut StdRng,
    ) -> Result<Self, LinkError> {
        match (&src.form, &dst.form) {
            (OutputForm::Vector { len: a }, OutputForm::Vector { len: b }) => {
                let hidden = vec2vec_hidden(hidden_factor, *b);
                Ok(LinkNet::Vec2Vec(Vec2Vec {
                    mlp: Mlp::new(*a, hidden, *b, rng),
                    in_norm: in_norm.unwrap_or_else(|| Norm::identity(*a)),
                    out_norm,
                    task: dst.task,
                }))
            }
            _ => Ok(LinkNet::Seq(SeqNet::new(
                src,
                dst,
                hidden_factor,
                in_norm,
                out_norm,
                rng,
            )?)),
        }
    }

    pub fn in_norm(&self) -> Option<&Norm> {
        match self {
            LinkNet::Vec2Vec(v) => Some(&v.in_norm),
            LinkNet::Seq(s) => s.in_norm(),
        }
    }

    pub fn out_norm(&self) -> Option<&Norm> {
        match self {
            LinkNet::Vec2Vec(v) => v.out_norm.as_ref(),
            LinkNet::Seq(s) => s.out_norm(),
        }
    }

    /// Trains on the pairs for `p.epochs` epochs of mini-batch RMSprop (a fresh optimiser
    /// state; the weights continue from where they are, which is how fine-tuning works).
    pub fn fit(
        &mut self,
        inputs: &[&OutputValue],
        targets: &[&OutputValue],
        p: &TrainParams,
        rng: &mut StdRng,
    ) -> Result<(), LinkError> {
        if inputs.is_empty() {
            return Ok(());
        }
        match self {
            LinkNet::Vec2Vec(v) => {
                let (x, t) = v.matrices(inputs, targets)?;
                let mut opt = RmsProp::new(p.learning_rate as f32, v.mlp.params.len());
                let mut ws = v.mlp.workspace(p.batch_size);
                let mut order: Vec<usize> = (0..inputs.len()).collect();
                for _ in 0..p.epochs {
                    order.shuffle(rng);
                    v.mlp.train_epoch(
                        v.task,
                        &x,
                        &t,
                        &order,
                        p.batch_size,
                        p.dropout,
                        &mut opt,
                        rng,
                        &mut ws,
                    );
                }
                if is_linear(v.task) {
                    v.mlp.refit_linear_head(x.view(), t.view());
                }
                Ok(())
            }
            LinkNet::Seq(s) => s.fit(
                inputs,
                targets,
                p.epochs,
                p.batch_size,
                p.learning_rate,
                rng,
            ),
        }
    }

    /// A loss-prediction head for this link (vec2vec links with at least two training
    /// pairs; None otherwise).
    pub fn fit_loss_head(
        &self,
        inputs: &[&OutputValue],
        targets: &[&OutputValue],
        p: &TrainParams,
        rng: &mut StdRng,
    ) -> Result<Option<LossHead>, LinkError> {
        match self {
            LinkNet::Vec2Vec(v) if inputs.len() >= 2 => {
                v.fit_loss_head(inputs, targets, p, rng).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// The number of hidden activations [`hidden`](Self::hidden) gives (vec2vec links).
    pub fn hidden_len(&self) -> Option<usize> {
        match self {
            LinkNet::Vec2Vec(v) => Some(v.mlp.hidden),
            LinkNet::Seq(_) => None,
        }
    }

    /// The hidden activation a loss head reads (vec2vec links; None for the others).
    pub fn hidden(&self, input: &OutputValue) -> Result<Option<Vec<f32>>, LinkError> {
        match self {
            LinkNet::Vec2Vec(v) => Ok(Some(v.hidden(vector(input)?))),
            LinkNet::Seq(_) => Ok(None),
        }
    }

    /// Pre-activation output of a vector target (what ensembles weight and sum).
    pub fn logits(&self, input: &OutputValue) -> Result<Vec<f32>, LinkError> {
        match self {
            LinkNet::Vec2Vec(v) => Ok(v.logits(vector(input)?)),
            LinkNet::Seq(s) => Ok(s.logits(&[input])?.pop().unwrap_or_default()),
        }
    }

    /// The link's prediction of the target output.
    pub fn predict(&self, input: &OutputValue) -> Result<OutputValue, LinkError> {
        match self {
            LinkNet::Vec2Vec(v) => {
                let mut z = v.logits(vector(input)?);
                activate(Activation::for_task(v.task), &mut z);
                Ok(OutputValue::Vector(z))
            }
            LinkNet::Seq(s) => s.predict(input),
        }
    }

    pub fn params(&self) -> Vec<f32> {
        match self {
            LinkNet::Vec2Vec(v) => v.mlp.params.clone(),
            LinkNet::Seq(s) => s.params(),
        }
    }

    pub fn set_params(&mut self, p: &[f32]) -> Result<(), LinkError> {
        match self {
            LinkNet::Vec2Vec(v) => {
                if p.len() != v.mlp.params.len() {
                    return Err(LinkError::ParamCount {
                        expected: v.mlp.params.len(),
                        found: p.len(),
                    });
                }
                if p.iter().any(|x| !x.is_finite()) {
                    return Err(LinkError::Numeric("non-finite parameter".into()));
                }
                v.mlp.params.copy_from_slice(p);
                Ok(())
            }
            LinkNet::Seq(s) => s.set_params(p),
        }
    }

    /// Gradient of the mean training loss over the pairs (no dropout), flat like `params`.
    pub fn gradient(
        &self,
        inputs: &[&OutputValue],
        targets: &[&OutputValue],
    ) -> Result<Vec<f32>, LinkError> {
        match self {
            LinkNet::Vec2Vec(v) => {
                let (x, t) = v.matrices(inputs, targets)?;
                let mut ws = v.mlp.workspace(inputs.len().max(1));
                let mut rng = StdRng::seed_from_u64(0);
                v.mlp
                    .batch_gradient(v.task, x.view(), t.view(), 0.0, &mut rng, &mut ws);
                Ok(ws_grad(ws))
            }
            LinkNet::Seq(s) => s.gradient(inputs, targets),
        }
    }
}

fn ws_grad(ws: super::mlp::Workspace) -> Vec<f32> {
    ws.into_grad()
}

/// Checks a value against a spec, as a link error.
pub(crate) fn check(spec: &OutputSpec, v: &OutputValue, what: &str) -> Result<(), LinkError> {
    spec.check(v)
        .map_err(|e| LinkError::Form(format!("{what}: {e}")))
}
