//! One loaded model: its ONNX Runtime session, its family adapter and its output head.

use super::ModelError;
use super::adapters::{Adapter, AdapterOutput, InputData, Prepared, RawTensor, face_region};
use super::heads::Head;
use super::onnx_info::{IoInfo, read_signature};
use super::postprocess::Detection;
use super::preprocess::Region;
use super::runtime::{cuda_available, environment, init_runtime};
use super::views::View;
use crate::config::{AdapterKind, ModelConfig};
use crate::frame::Frame;
use crate::metrics::Metrics;
use crate::output::{OutputSpec, OutputValue};
use ort::session::Session;
use ort::value::{Tensor, ValueType};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What one frame's session run gave in a batch: its raw outputs, nothing when the frame had
/// no images (no crops), or why it failed.
type RunOutputs = Result<Option<Vec<RawTensor>>, ModelError>;

/// Where the time of one inference went, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Timing {
    pub pre_ms: f64,
    pub run_ms: f64,
    pub post_ms: f64,
}

impl Timing {
    pub fn total_ms(&self) -> f64 {
        self.pre_ms + self.run_ms + self.post_ms
    }
}

/// The result of one inference.
#[derive(Clone, Debug)]
pub struct Inference {
    /// The head's value.
    pub value: OutputValue,
    /// Detections in frame pixels (detector families; empty for classifiers), for models that
    /// take crops from this one and for output records.
    pub detections: Vec<Detection>,
    /// Per-image class probabilities (classifier families: one row per crop, or one for the
    /// frame).
    pub probs: Vec<Vec<f32>>,
    /// The link view of the run (see [`View`]).
    pub view: Vec<f32>,
    pub timing: Timing,
}

/// One model ready to run.
pub struct LoadedModel {
    cfg: ModelConfig,
    path: PathBuf,
    session: Session,
    adapter: Adapter,
    head: Head,
    view: View,
    /// Whether the input's first dimension is free: one run can take the images of several
    /// frames at once.
    batch_input: bool,
    executions: prometheus::IntCounter,
    latency: prometheus::Histogram,
}

fn io_info(name: &str, ty: &ValueType) -> IoInfo {
    let (elem_type, dims) = match ty {
        ValueType::Tensor { ty, shape, .. } => {
            let elem = match ty {
                ort::value::TensorElementType::Float32 => 1,
                ort::value::TensorElementType::Int32 => 6,
                ort::value::TensorElementType::Int64 => 7,
                ort::value::TensorElementType::Uint8 => 2,
                _ => 0,
            };
            (elem, shape.iter().map(|&d| (d >= 0).then_some(d)).collect())
        }
        _ => (0, vec![]),
    };
    IoInfo {
        name: name.to_string(),
        elem_type,
        dims,
    }
}

impl LoadedModel {
    /// Creates the session for `cfg` (its path relative to `base_dir`), binds the adapter to
    /// the model's signature and the head to the adapter, and counts the load.
    pub fn load(cfg: &ModelConfig, base_dir: &Path, metrics: &Metrics) -> Result<Self, ModelError> {
        init_runtime()?;
        let env = environment()?;
        let path = base_dir.join(&cfg.path);
        // Reading the signature first turns a missing, truncated or foreign file into a clear
        // error before ONNX Runtime sees it.
        read_signature(&path)?;
        let session_err = |e: &dyn std::fmt::Display| ModelError::Session {
            model: cfg.id.clone(),
            path: path.clone(),
            message: e.to_string(),
        };
        let mut providers = Vec::new();
        if cuda_available() {
            providers.push(ort::ep::CUDA::default().build());
        }
        // Without the CPU arena, memory goes back to the system when the session is dropped.
        providers.push(ort::ep::CPU::default().with_arena_allocator(false).build());
        let session = Session::builder(env)
            .map_err(|e| session_err(&e))?
            .with_intra_threads(cfg.threads.max(1))
            .map_err(|e| session_err(&e))?
            // Spinning threads would take the cores the cameras' decoders and the other
            // stages need between runs.
            .with_intra_op_spinning(cfg.threads <= 1)
            .map_err(|e| session_err(&e))?
            .with_inter_threads(1)
            .map_err(|e| session_err(&e))?
            .with_execution_providers(providers)
            .map_err(|e| session_err(&e))?
            .commit_from_file(&path)
            .map_err(|e| session_err(&e))?;
        let inputs: Vec<IoInfo> = session
            .inputs()
            .iter()
            .map(|o| io_info(o.name(), o.dtype()))
            .collect();
        let batch_input = inputs
            .first()
            .is_some_and(|i| i.dims.first().is_some_and(|d| d.is_none()));
        let outputs: Vec<IoInfo> = session
            .outputs()
            .iter()
            .map(|o| io_info(o.name(), o.dtype()))
            .collect();
        let adapter = Adapter::new(cfg.adapter, &inputs, &outputs).map_err(|message| {
            ModelError::Mismatch {
                model: cfg.id.clone(),
                path: path.clone(),
                adapter: adapter_name(cfg.adapter),
                message,
            }
        })?;
        if cfg.crops_from.is_some() && !adapter.takes_crops() {
            return Err(ModelError::Config {
                model: cfg.id.clone(),
                message: format!(
                    "crops_from needs a classifier (efficientnet_lite, face_attribute), not {}",
                    adapter_name(cfg.adapter)
                ),
            });
        }
        let head = Head::new(&cfg.id, cfg.adapter, &cfg.head, adapter.num_classes())?;
        let view = View::new(
            &cfg.id,
            cfg.adapter,
            cfg.view.as_ref(),
            &cfg.head,
            adapter.num_classes(),
        )?;
        metrics
            .model_loads
            .with_label_values(&[cfg.id.as_str()])
            .inc();
        tracing::info!(model = %cfg.id, path = %path.display(), adapter = adapter_name(cfg.adapter), "model loaded");
        Ok(Self {
            executions: metrics
                .model_executions
                .with_label_values(&[cfg.id.as_str()]),
            latency: metrics
                .inference_seconds
                .with_label_values(&[cfg.id.as_str()]),
            cfg: cfg.clone(),
            path,
            session,
            adapter,
            head,
            view,
            batch_input,
        })
    }

    /// Whether one run can take the images of several frames (the model's input has a free
    /// batch dimension).
    pub fn accepts_batch(&self) -> bool {
        self.batch_input
    }

    pub fn id(&self) -> &str {
        &self.cfg.id
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn adapter(&self) -> &Adapter {
        &self.adapter
    }

    pub fn spec(&self) -> &OutputSpec {
        self.head.spec()
    }

    pub fn view(&self) -> &View {
        &self.view
    }

    /// Runs the model on `frame`, or on crops of `crops` (another model's detections) when the
    /// model is configured with `crops_from`.
    pub fn infer(
        &mut self,
        frame: &Frame,
        crops: Option<&[Detection]>,
    ) -> Result<Inference, ModelError> {
        let t0 = Instant::now();
        let regions = self.regions(frame, crops)?;
        let (raw, timing) = if regions.is_empty() {
            // No crops (e.g. no faces): nothing to run; the head states what that gives.
            (
                vec![],
                Timing {
                    pre_ms: ms(t0),
                    ..Timing::default()
                },
            )
        } else {
            self.run_regions(frame, &regions)?
        };
        Ok(self.finish(frame, raw, timing))
    }

    /// Runs the model on several frames (each with its crops, as [`LoadedModel::infer`]), in
    /// three stages spread over `workers` threads: pre-processing of the frames in parallel,
    /// inference (one run over every frame's images when the model takes a batch, else one
    /// run per frame, each on the session's intra-op threads), then post-processing in
    /// parallel. Each frame's timing is its share of each stage's wall time.
    pub fn infer_many(
        &mut self,
        jobs: &[(&Frame, Option<&[Detection]>)],
        workers: usize,
    ) -> Vec<Result<Inference, ModelError>> {
        let n = jobs.len().max(1) as f64;
        let t0 = Instant::now();
        let prepared: Vec<Result<Option<Prepared>, ModelError>> = {
            let this = &*self;
            parallel_map(workers, jobs.iter().collect(), |(frame, crops)| {
                let regions = this.regions(frame, *crops)?;
                Ok((!regions.is_empty()).then(|| this.adapter.prepare(frame, &regions)))
            })
        };
        let pre_ms = ms(t0) / n;
        let t1 = Instant::now();
        let raws = self.run_prepared(prepared);
        let run_ms = ms(t1) / n;
        let t2 = Instant::now();
        let this = &*self;
        let work: Vec<(usize, RunOutputs)> = raws.into_iter().enumerate().collect();
        let mut done = parallel_map(workers, work, |(i, raw)| {
            let timing = Timing {
                pre_ms,
                run_ms,
                post_ms: 0.0,
            };
            Ok(this.finish(jobs[i].0, raw?.unwrap_or_default(), timing))
        });
        let post_ms = ms(t2) / n;
        for inference in done.iter_mut().flatten() {
            inference.timing.post_ms = post_ms;
        }
        done
    }

    /// The session runs of [`LoadedModel::infer_many`]: one over every frame's images when
    /// the model takes a batch and the images have one shape, else one per frame. A frame
    /// with no images (no crops) gets `None`.
    fn run_prepared(
        &mut self,
        prepared: Vec<Result<Option<Prepared>, ModelError>>,
    ) -> Vec<RunOutputs> {
        let images: Vec<i64> = prepared
            .iter()
            .map(|p| match p {
                Ok(Some(p)) => p.shape.first().copied().unwrap_or(0),
                _ => 0,
            })
            .collect();
        let shapes: Vec<&[i64]> = prepared
            .iter()
            .filter_map(|p| match p {
                Ok(Some(p)) => Some(p.shape.get(1..).unwrap_or(&[])),
                _ => None,
            })
            .collect();
        let batched = self.batch_input
            && shapes.len() > 1
            && shapes.windows(2).all(|w| w[0] == w[1])
            && prepared.iter().all(|p| {
                !matches!(
                    p,
                    Ok(Some(Prepared {
                        data: InputData::I32(_),
                        ..
                    }))
                )
            });
        if !batched {
            return prepared
                .into_iter()
                .map(|p| match p? {
                    Some(p) => self.session_run(p).map(Some),
                    None => Ok(None),
                })
                .collect();
        }
        // One input: the frames' images one after the other along the batch dimension.
        let total: i64 = images.iter().sum();
        let mut shape = vec![total];
        shape.extend_from_slice(shapes[0]);
        let mut data = Vec::new();
        let mut results: Vec<Option<RunOutputs>> = Vec::with_capacity(prepared.len());
        for p in prepared {
            match p {
                Ok(Some(Prepared {
                    data: InputData::F32(v),
                    ..
                })) => {
                    data.extend_from_slice(&v);
                    results.push(None);
                }
                Ok(_) => results.push(Some(Ok(None))),
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let run = self.session_run(Prepared {
            shape,
            data: InputData::F32(data),
        });
        let split = run.and_then(|raw| split_batch(&self.cfg.id, &raw, &images));
        match split {
            Ok(mut per_frame) => results
                .into_iter()
                .enumerate()
                .map(|(i, r)| r.unwrap_or_else(|| Ok(per_frame[i].take())))
                .collect(),
            Err(e) => results
                .into_iter()
                .map(|r| {
                    r.unwrap_or_else(|| {
                        Err(ModelError::Run {
                            model: self.cfg.id.clone(),
                            message: e.to_string(),
                        })
                    })
                })
                .collect(),
        }
    }

    /// Decodes one run's raw outputs on `frame` into the head's value, the detections, the
    /// class probabilities and the link view; counts the execution.
    fn finish(&self, frame: &Frame, raw: Vec<RawTensor>, mut timing: Timing) -> Inference {
        let t2 = Instant::now();
        let min_score = self.cfg.min_score;
        // The view may need weaker detections than the head: decode down to its lowest
        // threshold, then keep the head's own for everything else.
        let decode_score = self
            .view
            .min_score()
            .map_or(min_score, |v| v.min(min_score));
        let out = if raw.is_empty() {
            AdapterOutput::Classes {
                probs: vec![],
                features: vec![],
            }
        } else {
            self.adapter.decode(frame, &raw, decode_score)
        };
        let view = self.view.apply(&out, frame.width, frame.height, min_score);
        let out = match out {
            AdapterOutput::Detections(d) if decode_score < min_score => {
                AdapterOutput::Detections(d.into_iter().filter(|d| d.score >= min_score).collect())
            }
            other => other,
        };
        let value = self.head.apply(&out, frame.width, frame.height);
        let (detections, probs) = match out {
            AdapterOutput::Detections(d) => (d, vec![]),
            AdapterOutput::Classes { probs, .. } => (vec![], probs),
        };
        timing.post_ms = ms(t2);
        self.executions.inc();
        self.latency.observe(timing.total_ms() / 1000.0);
        Inference {
            value,
            detections,
            probs,
            view,
            timing,
        }
    }

    /// Pre-processing and the session run only: the raw output tensors, in the adapter's order.
    pub fn run_raw(
        &mut self,
        frame: &Frame,
        crops: Option<&[Detection]>,
    ) -> Result<Vec<RawTensor>, ModelError> {
        let regions = self.regions(frame, crops)?;
        Ok(self.run_regions(frame, &regions)?.0)
    }

    fn regions(
        &self,
        frame: &Frame,
        crops: Option<&[Detection]>,
    ) -> Result<Vec<Region>, ModelError> {
        match (crops, self.cfg.crops_from.is_some()) {
            (Some(c), _) if self.adapter.takes_crops() => {
                Ok(c.iter().map(|d| crop_region(self.cfg.adapter, d)).collect())
            }
            (Some(_), _) => Err(ModelError::Config {
                model: self.cfg.id.clone(),
                message: "this model family does not run on crops".into(),
            }),
            (None, true) => Err(ModelError::Config {
                model: self.cfg.id.clone(),
                message: "the model runs on crops (crops_from) but none were given".into(),
            }),
            (None, false) => Ok(vec![Region::full(frame)]),
        }
    }

    fn run_regions(
        &mut self,
        frame: &Frame,
        regions: &[Region],
    ) -> Result<(Vec<RawTensor>, Timing), ModelError> {
        let t0 = Instant::now();
        let prepared = self.adapter.prepare(frame, regions);
        let t1 = Instant::now();
        let raw = self.session_run(prepared)?;
        let t2 = Instant::now();
        let timing = Timing {
            pre_ms: (t1 - t0).as_secs_f64() * 1000.0,
            run_ms: (t2 - t1).as_secs_f64() * 1000.0,
            post_ms: ms(t2),
        };
        Ok((raw, timing))
    }

    /// One session run on a prepared input: the raw outputs, in the adapter's order.
    fn session_run(&mut self, prepared: Prepared) -> Result<Vec<RawTensor>, ModelError> {
        let run_err = |e: &dyn std::fmt::Display| ModelError::Run {
            model: self.cfg.id.clone(),
            message: e.to_string(),
        };
        let value: ort::session::SessionInputValue<'static> = match prepared.data {
            InputData::F32(v) => Tensor::from_array((prepared.shape, v))
                .map_err(|e| run_err(&e))?
                .into(),
            InputData::I32(v) => Tensor::from_array((prepared.shape, v))
                .map_err(|e| run_err(&e))?
                .into(),
        };
        let input_name = self.adapter.input_name().to_string();
        let names: Vec<String> = self
            .adapter
            .output_names()
            .iter()
            .map(|s| s.to_string())
            .collect();
        let model = self.cfg.id.clone();
        let outputs = self
            .session
            .run(vec![(Cow::<str>::Owned(input_name), value)])
            .map_err(|e| ModelError::Run {
                model: model.clone(),
                message: e.to_string(),
            })?;
        let mut raw = Vec::with_capacity(names.len());
        for name in names {
            let v = outputs.get(&name).ok_or_else(|| ModelError::Run {
                model: model.clone(),
                message: format!("output {name} missing from the run"),
            })?;
            let (shape, data) = v.try_extract_tensor::<f32>().map_err(|e| ModelError::Run {
                model: model.clone(),
                message: format!("output {name}: {e}"),
            })?;
            raw.push(RawTensor {
                name,
                shape: shape.to_vec(),
                data: data.to_vec(),
            });
        }
        Ok(raw)
    }
}

/// Splits the outputs of one run over several frames' images back into each frame's outputs
/// (`images[i]` images of frame `i`, one after the other; frames with none get `None`).
fn split_batch(
    model: &str,
    raw: &[RawTensor],
    images: &[i64],
) -> Result<Vec<Option<Vec<RawTensor>>>, ModelError> {
    let total: i64 = images.iter().sum();
    let mut per_frame: Vec<Option<Vec<RawTensor>>> = images
        .iter()
        .map(|&n| (n > 0).then(|| Vec::with_capacity(raw.len())))
        .collect();
    for t in raw {
        let rows = t.shape.first().copied().unwrap_or(0);
        if rows != total || total <= 0 || t.data.len() % total as usize != 0 {
            return Err(ModelError::Run {
                model: model.to_string(),
                message: format!(
                    "output {} has shape {:?} for a batch of {total} images",
                    t.name, t.shape
                ),
            });
        }
        let row = t.data.len() / total as usize;
        let mut at = 0usize;
        for (slot, &n) in per_frame.iter_mut().zip(images) {
            let n = n.max(0) as usize;
            if let Some(outs) = slot {
                let mut shape = t.shape.clone();
                shape[0] = n as i64;
                outs.push(RawTensor {
                    name: t.name.clone(),
                    shape,
                    data: t.data[at * row..(at + n) * row].to_vec(),
                });
            }
            at += n;
        }
    }
    Ok(per_frame)
}

/// `f` over `items` on up to `workers` threads (contiguous chunks, the first on the calling
/// thread), results in the items' order.
fn parallel_map<T: Send, R: Send>(
    workers: usize,
    mut items: Vec<T>,
    f: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    let workers = workers.clamp(1, items.len().max(1));
    if workers == 1 {
        return items.into_iter().map(&f).collect();
    }
    let chunk = items.len().div_ceil(workers);
    let mut chunks = Vec::with_capacity(workers);
    while items.len() > chunk {
        let rest = items.split_off(chunk);
        chunks.push(std::mem::replace(&mut items, rest));
    }
    chunks.push(items);
    let f = &f;
    std::thread::scope(|scope| {
        let mut chunks = chunks.into_iter();
        let first = chunks.next().unwrap_or_default();
        let handles: Vec<_> = chunks
            .map(|c| scope.spawn(move || c.into_iter().map(f).collect::<Vec<R>>()))
            .collect();
        let mut out: Vec<R> = first.into_iter().map(f).collect();
        for h in handles {
            match h.join() {
                Ok(r) => out.extend(r),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}

fn crop_region(kind: AdapterKind, d: &Detection) -> Region {
    match kind {
        AdapterKind::FaceAttribute => face_region(d),
        _ => Region {
            x: f64::from(d.x1),
            y: f64::from(d.y1),
            w: f64::from((d.x2 - d.x1).max(1.0)),
            h: f64::from((d.y2 - d.y1).max(1.0)),
        },
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

pub(crate) fn adapter_name(kind: AdapterKind) -> &'static str {
    match kind {
        AdapterKind::Centernet => "centernet",
        AdapterKind::Nanodet => "nanodet",
        AdapterKind::MovenetMultipose => "movenet_multipose",
        AdapterKind::Blazeface => "blazeface",
        AdapterKind::EfficientnetLite => "efficientnet_lite",
        AdapterKind::FaceAttribute => "face_attribute",
    }
}
