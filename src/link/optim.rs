//! RMSprop (Tieleman and Hinton), the optimiser of paper section 3.6, in two forms: over flat
//! f32 slices for the hand-written vec2vec network, and as a candle `Optimizer` for the
//! sequence networks. Both use the Keras defaults (rho 0.9, epsilon 1e-7).

use candle_core::{Tensor, Var};

pub const RHO: f32 = 0.9;
pub const EPS: f32 = 1e-7;

/// RMSprop state over one flat parameter vector.
#[derive(Clone, Debug)]
pub struct RmsProp {
    pub lr: f32,
    mean_sq: Vec<f32>,
}

impl RmsProp {
    pub fn new(lr: f32, len: usize) -> Self {
        Self {
            lr,
            mean_sq: vec![0.0; len],
        }
    }

    /// `p -= lr * g / (sqrt(E[g^2]) + eps)` with `E[g^2]` a running mean.
    pub fn step(&mut self, params: &mut [f32], grads: &[f32]) {
        for ((p, &g), v) in params.iter_mut().zip(grads).zip(self.mean_sq.iter_mut()) {
            *v = RHO * *v + (1.0 - RHO) * g * g;
            *p -= self.lr * g / (v.sqrt() + EPS);
        }
    }
}

/// RMSprop for candle variables.
pub struct CandleRmsProp {
    vars: Vec<(Var, Tensor)>,
    lr: f64,
}

impl candle_nn::Optimizer for CandleRmsProp {
    type Config = f64;

    fn new(vars: Vec<Var>, lr: f64) -> candle_core::Result<Self> {
        let vars = vars
            .into_iter()
            .filter(|v| v.dtype().is_float())
            .map(|v| {
                let sq = v.zeros_like()?;
                Ok((v, sq))
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self { vars, lr })
    }

    fn step(&mut self, grads: &candle_core::backprop::GradStore) -> candle_core::Result<()> {
        for (var, sq) in self.vars.iter_mut() {
            if let Some(g) = grads.get(var) {
                let new_sq =
                    ((sq.affine(RHO as f64, 0.0))? + g.sqr()?.affine(1.0 - RHO as f64, 0.0)?)?;
                let denom = (new_sq.sqrt()? + EPS as f64)?;
                let update = (g / denom)?.affine(self.lr, 0.0)?;
                var.set(&var.sub(&update)?)?;
                *sq = new_sq;
            }
        }
        Ok(())
    }

    fn learning_rate(&self) -> f64 {
        self.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.lr = lr;
    }
}
