//! The sequence link networks of paper section 3.4, in candle:
//! - seq2vec: embedding, LSTM, MLP head on the last state;
//! - vec2seq: MLP encoder (producing a few memory slots and the decoder's first state), then a
//!   decoder of embedding, LSTM, dot-product attention over the encoder memory and a fully
//!   connected layer over [state; context];
//! - seq2seq: embedding plus LSTM encoder (its states are the memory), the same decoder.
//!
//! Decoders are trained with teacher forcing (the previous exact token is fed, the end token
//! serving as start token) and decode greedily at inference. Sequence steps use a softmax over
//! the vocabulary and token cross-entropy.

use super::LinkError;
use super::fast_seq::Seq2VecInfer;
use super::norm::Norm;
use super::optim::CandleRmsProp;
use crate::output::{Activation, OutputForm, OutputSpec, OutputValue, TaskKind};
use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::rnn::{LSTMConfig, LSTMState, RNN};
use candle_nn::{Embedding, LSTM, Linear, Optimizer, VarBuilder, VarMap};
use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use std::sync::{Arc, RwLock};

/// Memory slots a vector encoder produces for the decoder to attend over.
const VEC_SLOTS: usize = 4;

enum Encoder {
    Vector {
        l1: Linear,
        l2: Linear,
        norm: Norm,
    },
    Sequence {
        embed: Embedding,
        lstm: LSTM,
        end: u32,
    },
}

enum Decoder {
    Vector {
        l1: Linear,
        l2: Linear,
        task: TaskKind,
        /// Target standardisation for linear tasks.
        norm: Option<Norm>,
    },
    Sequence {
        embed: Embedding,
        lstm: LSTM,
        out: Linear,
        vocab: usize,
        max_len: usize,
        end: u32,
    },
}

/// A seq2vec, vec2seq or seq2seq link network.
pub struct SeqNet {
    pub src: OutputSpec,
    pub dst: OutputSpec,
    pub hidden: usize,
    varmap: VarMap,
    enc: Encoder,
    dec: Decoder,
    /// The candle-free inference form of a seq2vec network, rebuilt whenever the weights
    /// change (`fit`, `set_params`); None for the other architectures.
    infer: RwLock<Option<Arc<Seq2VecInfer>>>,
}

pub(crate) fn ce(e: candle_core::Error) -> LinkError {
    LinkError::Numeric(e.to_string())
}

struct Encoded {
    memory: Tensor,
    mask_bias: Tensor,
    state: LSTMState,
}

impl SeqNet {
    /// Builds the network for `src -> dst` (at least one side a sequence), seeded by `rng`.
    /// `in_norm`/`out_norm` are the standardisations fitted on the training split (vector
    /// sides only; `out_norm` only for linear tasks).
    pub fn new(
        src: &OutputSpec,
        dst: &OutputSpec,
        hidden_factor: usize,
        in_norm: Option<Norm>,
        out_norm: Option<Norm>,
        rng: &mut StdRng,
    ) -> Result<Self, LinkError> {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let out_len = match dst.form {
            OutputForm::Vector { len } => len,
            OutputForm::Sequence { vocab, .. } => vocab,
        };
        let hidden = (hidden_factor * out_len).clamp(32, 256);
        let embed_dim = 32;
        let enc = match src.form {
            OutputForm::Vector { len } => Encoder::Vector {
                l1: candle_nn::linear(len, hidden, vb.pp("enc1")).map_err(ce)?,
                l2: candle_nn::linear(hidden, VEC_SLOTS * hidden, vb.pp("enc2")).map_err(ce)?,
                norm: in_norm.unwrap_or_else(|| Norm::identity(len)),
            },
            OutputForm::Sequence {
                vocab, end_token, ..
            } => Encoder::Sequence {
                embed: candle_nn::embedding(vocab, embed_dim, vb.pp("enc_embed")).map_err(ce)?,
                lstm: candle_nn::lstm(embed_dim, hidden, LSTMConfig::default(), vb.pp("enc_lstm"))
                    .map_err(ce)?,
                end: end_token,
            },
        };
        let dec = match dst.form {
            OutputForm::Vector { len } => Decoder::Vector {
                l1: candle_nn::linear(hidden, hidden, vb.pp("head1")).map_err(ce)?,
                l2: candle_nn::linear(hidden, len, vb.pp("head2")).map_err(ce)?,
                task: dst.task,
                norm: out_norm,
            },
            OutputForm::Sequence {
                vocab,
                max_len,
                end_token,
            } => Decoder::Sequence {
                embed: candle_nn::embedding(vocab, embed_dim, vb.pp("dec_embed")).map_err(ce)?,
                lstm: candle_nn::lstm(embed_dim, hidden, LSTMConfig::default(), vb.pp("dec_lstm"))
                    .map_err(ce)?,
                out: candle_nn::linear(2 * hidden, vocab, vb.pp("dec_out")).map_err(ce)?,
                vocab,
                max_len,
                end: end_token,
            },
        };
        let net = Self {
            src: src.clone(),
            dst: dst.clone(),
            hidden,
            varmap,
            enc,
            dec,
            infer: RwLock::new(None),
        };
        // Seeded initialisation (candle's own initialisers draw from an unseeded generator):
        // uniform in +-1/sqrt(fan_in) for matrices, zero biases.
        let mut init = Vec::new();
        for (_, shape) in net.param_shapes() {
            let n: usize = shape.iter().product();
            if shape.len() == 2 {
                let lim = 1.0 / (shape[1] as f32).sqrt();
                init.extend((0..n).map(|_| rng.random_range(-lim..lim)));
            } else {
                init.extend(std::iter::repeat_n(0.0, n));
            }
        }
        net.set_params(&init)?;
        Ok(net)
    }

    /// Parameter names and shapes in the fixed (sorted) order of the flat vector.
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let data = self.varmap.data().lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = data
            .iter()
            .map(|(k, var)| (k.clone(), var.dims().to_vec()))
            .collect();
        v.sort();
        v
    }

    fn sorted_vars(&self) -> Vec<(String, candle_core::Var)> {
        let data = self.varmap.data().lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = data
            .iter()
            .map(|(k, var)| (k.clone(), var.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    pub fn params(&self) -> Vec<f32> {
        let mut out = Vec::new();
        for (_, var) in self.sorted_vars() {
            if let Ok(v) = var
                .as_tensor()
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
            {
                out.extend(v);
            }
        }
        out
    }

    pub fn param_count(&self) -> usize {
        self.param_shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }

    pub fn set_params(&self, p: &[f32]) -> Result<(), LinkError> {
        let want = self.param_count();
        if p.len() != want {
            return Err(LinkError::ParamCount {
                expected: want,
                found: p.len(),
            });
        }
        let mut o = 0;
        for (_, var) in self.sorted_vars() {
            let n = var.elem_count();
            let t = Tensor::from_slice(&p[o..o + n], var.dims(), &Device::Cpu).map_err(ce)?;
            var.set(&t).map_err(ce)?;
            o += n;
        }
        self.refresh_infer()
    }

    /// Rebuilds the candle-free seq2vec inference form from the current weights.
    fn refresh_infer(&self) -> Result<(), LinkError> {
        let (Encoder::Sequence { end, .. }, Decoder::Vector { .. }) = (&self.enc, &self.dec) else {
            return Ok(());
        };
        let vars: std::collections::HashMap<String, candle_core::Var> =
            self.sorted_vars().into_iter().collect();
        let get = |name: &str| -> Result<(Vec<f32>, Vec<usize>), LinkError> {
            let v = vars
                .get(name)
                .ok_or_else(|| LinkError::Numeric(format!("seq2vec has no variable {name}")))?;
            let data = v
                .as_tensor()
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(ce)?;
            Ok((data, v.dims().to_vec()))
        };
        let built = Seq2VecInfer::build(&get, *end)?;
        *self.infer.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(built));
        Ok(())
    }

    fn infer(&self) -> Option<Arc<Seq2VecInfer>> {
        self.infer.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Pre-activation outputs of a vector target computed by candle (what the candle-free
    /// seq2vec form is checked against).
    pub fn candle_logits(&self, inputs: &[&OutputValue]) -> Result<Vec<Vec<f32>>, LinkError> {
        let enc = self.encode(inputs)?;
        let z = self.vec_logits(&enc)?.to_vec2::<f32>().map_err(ce)?;
        Ok(self.destandardise(z))
    }

    fn destandardise(&self, z: Vec<Vec<f32>>) -> Vec<Vec<f32>> {
        match self.out_norm() {
            Some(n) => z
                .into_iter()
                .map(|mut r| {
                    n.invert_in_place(&mut r);
                    r
                })
                .collect(),
            None => z,
        }
    }

    pub fn in_norm(&self) -> Option<&Norm> {
        match &self.enc {
            Encoder::Vector { norm, .. } => Some(norm),
            Encoder::Sequence { .. } => None,
        }
    }

    pub fn out_norm(&self) -> Option<&Norm> {
        match &self.dec {
            Decoder::Vector { norm, .. } => norm.as_ref(),
            Decoder::Sequence { .. } => None,
        }
    }

    fn encode(&self, inputs: &[&OutputValue]) -> Result<Encoded, LinkError> {
        let dev = Device::Cpu;
        let b = inputs.len();
        match &self.enc {
            Encoder::Vector { l1, l2, norm } => {
                let dim = norm.mean.len();
                let mut x = vec![0.0f32; b * dim];
                for (r, v) in inputs.iter().enumerate() {
                    norm.apply(vector(v)?, &mut x[r * dim..(r + 1) * dim]);
                }
                let x = Tensor::from_vec(x, (b, dim), &dev).map_err(ce)?;
                let h = l1.forward(&x).and_then(|t| t.relu()).map_err(ce)?;
                let memory = l2
                    .forward(&h)
                    .and_then(|t| t.tanh())
                    .and_then(|t| t.reshape((b, VEC_SLOTS, self.hidden)))
                    .map_err(ce)?;
                let h0 = memory.mean(1).map_err(ce)?;
                let c0 = h0.zeros_like().map_err(ce)?;
                let mask_bias = Tensor::zeros((b, VEC_SLOTS), DType::F32, &dev).map_err(ce)?;
                Ok(Encoded {
                    memory,
                    mask_bias,
                    state: LSTMState::new(h0, c0),
                })
            }
            Encoder::Sequence { embed, lstm, end } => {
                let seqs: Vec<Vec<u32>> = inputs
                    .iter()
                    .map(|v| {
                        let t = tokens(v)?;
                        let mut s = crate::output::strip_end(t, Some(*end)).to_vec();
                        s.push(*end);
                        Ok(s)
                    })
                    .collect::<Result<_, LinkError>>()?;
                let t_max = seqs.iter().map(Vec::len).max().unwrap_or(1);
                let mut ids = Vec::with_capacity(b * t_max);
                let mut last = vec![0f32; b * t_max];
                let mut bias = vec![0f32; b * t_max];
                for (r, s) in seqs.iter().enumerate() {
                    for t in 0..t_max {
                        ids.push(*s.get(t).unwrap_or(end));
                        if t >= s.len() {
                            bias[r * t_max + t] = -1e9;
                        }
                    }
                    last[r * t_max + s.len() - 1] = 1.0;
                }
                let ids = Tensor::from_vec(ids, (b, t_max), &dev).map_err(ce)?;
                let emb = embed.forward(&ids).map_err(ce)?;
                let states = lstm.seq(&emb).map_err(ce)?;
                let hs: Vec<Tensor> = states.iter().map(|s| s.h.clone()).collect();
                let cs: Vec<Tensor> = states.iter().map(|s| s.c.clone()).collect();
                let memory = Tensor::stack(&hs, 1).map_err(ce)?;
                let cmem = Tensor::stack(&cs, 1).map_err(ce)?;
                let sel = Tensor::from_vec(last, (b, t_max, 1), &dev).map_err(ce)?;
                let h0 = memory
                    .broadcast_mul(&sel)
                    .and_then(|t| t.sum(1))
                    .map_err(ce)?;
                let c0 = cmem
                    .broadcast_mul(&sel)
                    .and_then(|t| t.sum(1))
                    .map_err(ce)?;
                let mask_bias = Tensor::from_vec(bias, (b, t_max), &dev).map_err(ce)?;
                Ok(Encoded {
                    memory,
                    mask_bias,
                    state: LSTMState::new(h0, c0),
                })
            }
        }
    }

    /// One decoder step: new state and the vocabulary logits.
    fn dec_step(
        &self,
        enc: &Encoded,
        prev: &[u32],
        state: &LSTMState,
    ) -> Result<(LSTMState, Tensor), LinkError> {
        let Decoder::Sequence {
            embed, lstm, out, ..
        } = &self.dec
        else {
            return Err(LinkError::Numeric("not a sequence decoder".into()));
        };
        let ids = Tensor::from_slice(prev, prev.len(), &Device::Cpu).map_err(ce)?;
        let e = embed.forward(&ids).map_err(ce)?;
        let st = lstm.step(&e, state).map_err(ce)?;
        let f = || -> candle_core::Result<Tensor> {
            let scores = enc.memory.matmul(&st.h.unsqueeze(2)?)?.squeeze(2)?;
            let alpha = candle_nn::ops::softmax(&(scores + &enc.mask_bias)?, D::Minus1)?;
            let ctx = alpha.unsqueeze(1)?.matmul(&enc.memory)?.squeeze(1)?;
            out.forward(&Tensor::cat(&[&st.h, &ctx], 1)?)
        };
        let logits = f().map_err(ce)?;
        Ok((st, logits))
    }

    /// Vector targets: the pre-activation output (de-standardised for linear tasks) per input.
    fn vec_logits(&self, enc: &Encoded) -> Result<Tensor, LinkError> {
        let Decoder::Vector { l1, l2, .. } = &self.dec else {
            return Err(LinkError::Numeric("not a vector head".into()));
        };
        l1.forward(&enc.state.h)
            .and_then(|t| t.relu())
            .and_then(|t| l2.forward(&t))
            .map_err(ce)
    }

    /// The training loss over a mini-batch (mean per sample).
    fn loss(&self, inputs: &[&OutputValue], targets: &[&OutputValue]) -> Result<Tensor, LinkError> {
        let enc = self.encode(inputs)?;
        let dev = Device::Cpu;
        let b = inputs.len();
        match &self.dec {
            Decoder::Vector { task, norm, .. } => {
                let z = self.vec_logits(&enc)?;
                let dim = z.dim(1).map_err(ce)?;
                let mut t = vec![0f32; b * dim];
                for (r, v) in targets.iter().enumerate() {
                    let row = &mut t[r * dim..(r + 1) * dim];
                    match norm {
                        Some(n) => n.apply(vector(v)?, row),
                        None => row.copy_from_slice(vector(v)?),
                    }
                }
                let t = Tensor::from_vec(t, (b, dim), &dev).map_err(ce)?;
                vector_loss(*task, &z, &t).map_err(ce)
            }
            Decoder::Sequence {
                vocab,
                max_len,
                end,
                ..
            } => {
                let (vocab, max_len, end) = (*vocab, *max_len, *end);
                let ys: Vec<Vec<u32>> = targets
                    .iter()
                    .map(|v| Ok(target_tokens(tokens(v)?, end, max_len)))
                    .collect::<Result<_, LinkError>>()?;
                let t_len = ys.iter().map(Vec::len).max().unwrap_or(1);
                let mut state = enc.state.clone();
                let mut prev = vec![end; b];
                let mut steps = Vec::with_capacity(t_len);
                let mut onehot = vec![0f32; b * t_len * vocab];
                for t in 0..t_len {
                    let (st, logits) = self.dec_step(&enc, &prev, &state)?;
                    state = st;
                    steps.push(logits);
                    for (r, y) in ys.iter().enumerate() {
                        if let Some(&tok) = y.get(t) {
                            onehot[(r * t_len + t) * vocab + tok as usize] = 1.0;
                            prev[r] = tok;
                        } else {
                            prev[r] = end;
                        }
                    }
                }
                let f = || -> candle_core::Result<Tensor> {
                    let logits = Tensor::stack(&steps, 1)?;
                    let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
                    let oh = Tensor::from_vec(onehot, (b, t_len, vocab), &dev)?;
                    let tokens: f32 = ys.iter().map(|y| y.len() as f32).sum();
                    (logp * oh)?
                        .sum_all()?
                        .affine(-1.0 / tokens.max(1.0) as f64, 0.0)
                };
                f().map_err(ce)
            }
        }
    }

    /// The mean training loss over the pairs (for gradient checks and monitoring).
    pub fn loss_value(
        &self,
        inputs: &[&OutputValue],
        targets: &[&OutputValue],
    ) -> Result<f32, LinkError> {
        self.loss(inputs, targets)?.to_scalar::<f32>().map_err(ce)
    }

    /// Mini-batch RMSprop over the pairs for `epochs` epochs.
    pub fn fit(
        &mut self,
        inputs: &[&OutputValue],
        targets: &[&OutputValue],
        epochs: usize,
        batch: usize,
        lr: f64,
        rng: &mut StdRng,
    ) -> Result<(), LinkError> {
        let mut opt = CandleRmsProp::new(self.varmap.all_vars(), lr).map_err(ce)?;
        let mut order: Vec<usize> = (0..inputs.len()).collect();
        for _ in 0..epochs {
            order.shuffle(rng);
            for chunk in order.chunks(batch.max(1)) {
                let xs: Vec<&OutputValue> = chunk.iter().map(|&i| inputs[i]).collect();
                let ts: Vec<&OutputValue> = chunk.iter().map(|&i| targets[i]).collect();
                let loss = self.loss(&xs, &ts)?;
                opt.backward_step(&loss).map_err(ce)?;
            }
        }
        self.refresh_infer()
    }

    /// Gradient of the mean loss over the pairs, flat in parameter order.
    pub fn gradient(
        &self,
        inputs: &[&OutputValue],
        targets: &[&OutputValue],
    ) -> Result<Vec<f32>, LinkError> {
        let loss = self.loss(inputs, targets)?;
        let grads = loss.backward().map_err(ce)?;
        let mut out = Vec::new();
        for (_, var) in self.sorted_vars() {
            match grads.get(&var) {
                Some(g) => out.extend(
                    g.flatten_all()
                        .and_then(|t| t.to_vec1::<f32>())
                        .map_err(ce)?,
                ),
                None => out.extend(std::iter::repeat_n(0.0, var.elem_count())),
            }
        }
        Ok(out)
    }

    /// Vector targets: pre-activation outputs per input (de-standardised for linear tasks).
    pub fn logits(&self, inputs: &[&OutputValue]) -> Result<Vec<Vec<f32>>, LinkError> {
        if let Some(fast) = self.infer() {
            let z = inputs
                .iter()
                .map(|v| fast.logits(tokens(v)?))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(self.destandardise(z));
        }
        self.candle_logits(inputs)
    }

    /// The link's prediction for one input (activated vector, or greedily decoded tokens).
    pub fn predict(&self, input: &OutputValue) -> Result<OutputValue, LinkError> {
        match &self.dec {
            Decoder::Vector { task, .. } => {
                let mut z = self.logits(&[input])?.pop().unwrap_or_default();
                crate::output::activate(Activation::for_task(*task), &mut z);
                Ok(OutputValue::Vector(z))
            }
            Decoder::Sequence { max_len, end, .. } => {
                let enc = self.encode(&[input])?;
                let mut state = enc.state.clone();
                let mut prev = *end;
                let mut out = Vec::new();
                while out.len() < *max_len {
                    let (st, logits) = self.dec_step(&enc, &[prev], &state)?;
                    state = st;
                    let l = logits
                        .squeeze(0)
                        .and_then(|t| t.to_vec1::<f32>())
                        .map_err(ce)?;
                    let tok = crate::output::metric_argmax(&l) as u32;
                    out.push(tok);
                    if tok == *end {
                        break;
                    }
                    prev = tok;
                }
                Ok(OutputValue::Tokens(out))
            }
        }
    }
}

/// The decoder's target: the tokens before the end token, then the end token, at most
/// `max_len` in all.
fn target_tokens(t: &[u32], end: u32, max_len: usize) -> Vec<u32> {
    let mut y = crate::output::strip_end(t, Some(end)).to_vec();
    y.push(end);
    y.truncate(max_len.max(1));
    y
}

/// The per-task loss of section 3.6 on candle tensors (mean over the batch).
pub(crate) fn vector_loss(task: TaskKind, z: &Tensor, t: &Tensor) -> candle_core::Result<Tensor> {
    let b = z.dim(0)? as f64;
    match Activation::for_task(task) {
        Activation::Softmax => {
            let logp = candle_nn::ops::log_softmax(z, D::Minus1)?;
            (logp * t)?.sum_all()?.affine(-1.0 / b, 0.0)
        }
        Activation::Sigmoid => {
            // softplus(z) - t z, with softplus(z) = relu(z) + ln(1 + e^-|z|).
            let sp = (z.relu()? + ((z.abs()?.neg()?.exp()? + 1.0)?.log())?)?;
            let n = z.elem_count() as f64;
            (sp - (z * t)?)?.sum_all()?.affine(1.0 / n, 0.0)
        }
        Activation::Linear => {
            let n = z.dim(1)? as f64;
            (z - t)?.sqr()?.sum_all()?.affine(1.0 / (n * b), 0.0)
        }
    }
}

/// [`vector_loss`] for checking the hand-written vec2vec network against candle.
#[doc(hidden)]
pub fn vector_loss_for_tests(
    task: TaskKind,
    z: &Tensor,
    t: &Tensor,
) -> candle_core::Result<Tensor> {
    vector_loss(task, z, t)
}

pub(crate) fn vector(v: &OutputValue) -> Result<&[f32], LinkError> {
    match v {
        OutputValue::Vector(x) => Ok(x),
        OutputValue::Tokens(_) => Err(LinkError::Form("expected a vector, found tokens".into())),
    }
}

pub(crate) fn tokens(v: &OutputValue) -> Result<&[u32], LinkError> {
    match v {
        OutputValue::Tokens(x) => Ok(x),
        OutputValue::Vector(_) => Err(LinkError::Form("expected tokens, found a vector".into())),
    }
}
