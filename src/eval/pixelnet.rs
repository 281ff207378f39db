//! A small convolutional network on frame thumbnails with one output head per target model,
//! in candle: the multi-task baseline ([`super::mtl`], a shared backbone and a head per model)
//! and the distilled students ([`super::kd`], two convolutional layers and one head) are both
//! this network, trained to reproduce the models' exact outputs.
//!
//! Backbone: `convs` 3x3 convolutions of stride 2 with ReLU, then the mean over the spatial
//! positions; each head is a linear layer to its model's output length. Losses are the link
//! losses of section 3.6 ([`crate::link::seq`]'s `vector_loss`: soft-label cross-entropy,
//! binary cross-entropy, squared error); count, regression and box targets are standardised
//! per component on the training frames and mapped back when predicting.

use super::EvalError;
use crate::link::optim::CandleRmsProp;
use crate::output::{Activation, OutputForm, OutputSpec, OutputValue, activate};
use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Linear, Optimizer, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The network's shape and training knobs.
#[derive(Clone, Debug, PartialEq)]
pub struct NetConfig {
    /// Output channels of each convolution (its length is the depth).
    pub channels: Vec<usize>,
    pub epochs: usize,
    pub batch: usize,
    /// RMSprop step size.
    pub learning_rate: f64,
    pub seed: u64,
}

impl NetConfig {
    /// The multi-task backbone: three convolutions (16, 32, 32 channels).
    pub fn multi_task(seed: u64) -> Self {
        NetConfig {
            channels: vec![16, 32, 32],
            epochs: 300,
            batch: 32,
            learning_rate: 0.003,
            seed,
        }
    }

    /// The distilled student of the paper's Fig. 5: two convolutions (16, 32 channels).
    pub fn student(seed: u64) -> Self {
        NetConfig {
            channels: vec![16, 32],
            ..Self::multi_task(seed)
        }
    }
}

/// Per head, how its targets were standardised (linear tasks) or left alone.
#[derive(Clone, Debug)]
struct HeadScale {
    mean: Vec<f32>,
    std: Vec<f32>,
}

/// A trained thumbnail network.
pub struct PixelNet {
    size: (usize, usize),
    convs: Vec<Conv2d>,
    heads: Vec<Linear>,
    specs: Vec<OutputSpec>,
    scales: Vec<Option<HeadScale>>,
    params: usize,
    device: Device,
}

fn ce(e: candle_core::Error) -> EvalError {
    EvalError::Invalid(format!("thumbnail network: {e}"))
}

/// The length of a vector head's output; sequence heads are refused.
fn head_len(spec: &OutputSpec, id: &str) -> Result<usize, EvalError> {
    match spec.form {
        OutputForm::Vector { len } => Ok(len),
        OutputForm::Sequence { .. } => Err(EvalError::Invalid(format!(
            "model `{id}` outputs a token sequence; the thumbnail networks reproduce vector outputs only"
        ))),
    }
}

/// Thumbnails (packed RGB, `w x h`) as one `[n, 3, h, w]` tensor scaled to about [-0.5, 0.5].
fn images(thumbs: &[&[u8]], (w, h): (usize, usize), device: &Device) -> Result<Tensor, EvalError> {
    let mut data = Vec::with_capacity(thumbs.len() * 3 * w * h);
    for t in thumbs {
        if t.len() != w * h * 3 {
            return Err(EvalError::Invalid(format!(
                "a thumbnail of {} bytes where {w}x{h} RGB takes {}",
                t.len(),
                w * h * 3
            )));
        }
        for c in 0..3 {
            data.extend((0..w * h).map(|p| f32::from(t[p * 3 + c]) / 255.0 - 0.5));
        }
    }
    Tensor::from_vec(data, (thumbs.len(), 3, h, w), device).map_err(ce)
}

impl PixelNet {
    /// Trains a network on `thumbs` (one per sample, `size` = (width, height)) to reproduce
    /// `targets[s][h]`, the output of head `h`'s model on sample `s`. `ids` name the heads'
    /// models for errors.
    pub fn train(
        size: (usize, usize),
        thumbs: &[&[u8]],
        targets: &[Vec<&OutputValue>],
        specs: &[OutputSpec],
        ids: &[String],
        cfg: &NetConfig,
    ) -> Result<Self, EvalError> {
        if thumbs.is_empty() || thumbs.len() != targets.len() {
            return Err(EvalError::Invalid(format!(
                "{} thumbnails for {} target rows; the network needs at least one sample",
                thumbs.len(),
                targets.len()
            )));
        }
        if cfg.channels.is_empty() || cfg.epochs == 0 || cfg.batch == 0 {
            return Err(EvalError::Invalid(
                "the thumbnail network needs a convolution, an epoch and a batch size".into(),
            ));
        }
        let device = Device::Cpu;
        let lens: Vec<usize> = specs
            .iter()
            .zip(ids)
            .map(|(s, id)| head_len(s, id))
            .collect::<Result<_, _>>()?;
        // Targets per head as an [n, len] matrix (standardised for linear tasks).
        let n = thumbs.len();
        let mut scales = Vec::with_capacity(specs.len());
        let mut head_targets = Vec::with_capacity(specs.len());
        for (h, spec) in specs.iter().enumerate() {
            let len = lens[h];
            let mut rows: Vec<f32> = Vec::with_capacity(n * len);
            for (s, row) in targets.iter().enumerate() {
                match row.get(h) {
                    Some(OutputValue::Vector(v)) if v.len() == len => rows.extend_from_slice(v),
                    _ => {
                        return Err(EvalError::Invalid(format!(
                            "sample {s}: model `{}` has no vector output of length {len}",
                            ids[h]
                        )));
                    }
                }
            }
            let scale = if Activation::for_task(spec.task) == Activation::Linear {
                let mut mean = vec![0.0f32; len];
                let mut std = vec![0.0f32; len];
                for r in rows.chunks_exact(len) {
                    mean.iter_mut().zip(r).for_each(|(m, x)| *m += x / n as f32);
                }
                for r in rows.chunks_exact(len) {
                    for c in 0..len {
                        std[c] += (r[c] - mean[c]).powi(2) / n as f32;
                    }
                }
                std.iter_mut().for_each(|s| *s = s.sqrt().max(1e-3));
                for r in rows.chunks_exact_mut(len) {
                    for c in 0..len {
                        r[c] = (r[c] - mean[c]) / std[c];
                    }
                }
                Some(HeadScale { mean, std })
            } else {
                None
            };
            scales.push(scale);
            head_targets.push(Tensor::from_vec(rows, (n, len), &device).map_err(ce)?);
        }

        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
        let conv_cfg = Conv2dConfig {
            padding: 1,
            stride: 2,
            ..Default::default()
        };
        let mut convs = Vec::with_capacity(cfg.channels.len());
        let mut c_in = 3;
        for (i, &c) in cfg.channels.iter().enumerate() {
            convs.push(
                candle_nn::conv2d(c_in, c, 3, conv_cfg, vb.pp(format!("conv{i}"))).map_err(ce)?,
            );
            c_in = c;
        }
        let heads = lens
            .iter()
            .enumerate()
            .map(|(h, &len)| candle_nn::linear(c_in, len, vb.pp(format!("head{h}"))))
            .collect::<candle_core::Result<Vec<_>>>()
            .map_err(ce)?;
        // Seeded initialisation (candle's initialisers draw from an unseeded generator):
        // He-uniform convolutions, uniform +-1/sqrt(fan_in) heads, zero biases.
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let mut params = 0usize;
        {
            let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
            let mut vars: Vec<(&String, &candle_core::Var)> = data.iter().collect();
            vars.sort_by(|a, b| a.0.cmp(b.0));
            for (name, var) in vars {
                let dims = var.dims().to_vec();
                let count: usize = dims.iter().product();
                params += count;
                let values: Vec<f32> = if dims.len() >= 2 {
                    let fan_in: usize = dims[1..].iter().product();
                    let lim = if name.starts_with("conv") {
                        (6.0 / fan_in as f32).sqrt()
                    } else {
                        1.0 / (fan_in as f32).sqrt()
                    };
                    (0..count).map(|_| rng.random_range(-lim..lim)).collect()
                } else {
                    vec![0.0; count]
                };
                var.set(&Tensor::from_vec(values, dims, &device).map_err(ce)?)
                    .map_err(ce)?;
            }
        }
        let mut net = PixelNet {
            size,
            convs,
            heads,
            specs: specs.to_vec(),
            scales,
            params,
            device: device.clone(),
        };
        let x_all = images(thumbs, size, &device)?;
        let mut opt = CandleRmsProp::new(varmap.all_vars(), cfg.learning_rate).map_err(ce)?;
        let mut order: Vec<usize> = (0..n).collect();
        for _ in 0..cfg.epochs {
            for i in (1..n).rev() {
                order.swap(i, rng.random_range(0..=i));
            }
            for chunk in order.chunks(cfg.batch) {
                let idx = Tensor::from_vec(
                    chunk.iter().map(|&i| i as u32).collect::<Vec<_>>(),
                    chunk.len(),
                    &device,
                )
                .map_err(ce)?;
                let x = x_all.index_select(&idx, 0).map_err(ce)?;
                let outs = net.forward(&x).map_err(ce)?;
                let mut loss: Option<Tensor> = None;
                for (h, z) in outs.iter().enumerate() {
                    let t = head_targets[h].index_select(&idx, 0).map_err(ce)?;
                    let l = crate::link::seq::vector_loss(net.specs[h].task, z, &t).map_err(ce)?;
                    loss = Some(match loss {
                        None => l,
                        Some(acc) => (acc + l).map_err(ce)?,
                    });
                }
                if let Some(loss) = loss {
                    opt.backward_step(&loss).map_err(ce)?;
                }
            }
        }
        net.device = device;
        Ok(net)
    }

    /// Pre-activation outputs of every head for a batch of images.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        let mut h = x.clone();
        for c in &self.convs {
            h = c.forward(&h)?.relu()?;
        }
        let pooled = h.mean(D::Minus1)?.mean(D::Minus1)?;
        self.heads.iter().map(|l| l.forward(&pooled)).collect()
    }

    /// Every head's output on one thumbnail, in its model's output space.
    pub fn predict(&self, thumb: &[u8]) -> Result<Vec<OutputValue>, EvalError> {
        let x = images(&[thumb], self.size, &self.device)?;
        let outs = self.forward(&x).map_err(ce)?;
        let mut values = Vec::with_capacity(outs.len());
        for (h, z) in outs.iter().enumerate() {
            let mut v: Vec<f32> = z.flatten_all().map_err(ce)?.to_vec1().map_err(ce)?;
            match &self.scales[h] {
                Some(s) => {
                    for (c, x) in v.iter_mut().enumerate() {
                        *x = *x * s.std[c] + s.mean[c];
                    }
                }
                None => activate(Activation::for_task(self.specs[h].task), &mut v),
            }
            values.push(OutputValue::Vector(v));
        }
        Ok(values)
    }

    /// Parameters of the network.
    pub fn param_count(&self) -> usize {
        self.params
    }

    /// Parameter memory in MB (f32 weights), as link memory is counted.
    pub fn memory_mb(&self) -> f64 {
        self.params as f64 * 4.0 / 1e6
    }
}
