//! The pipeline file: what a user writes to describe cameras, models, links, the scheduler,
//! online adaptation, sinks and metrics. Every field's doc comment is its user documentation;
//! unknown fields are rejected everywhere.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The current pipeline file format version.
pub const PIPELINE_VERSION: u32 = 1;

/// A whole pipeline file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// Format version of the file; must be 1.
    pub version: u32,
    /// The cameras whose frames are analysed.
    pub cameras: Vec<CameraConfig>,
    /// The black-box models to run or predict.
    pub models: Vec<ModelConfig>,
    /// How model links are obtained: trained from profiled samples or loaded from a bundle.
    #[serde(default)]
    pub links: LinksConfig,
    /// Which models run, under which budget, re-selected how often.
    pub scheduler: SchedulerConfig,
    /// Online adaptation of the links.
    #[serde(default)]
    pub adaptation: AdaptationConfig,
    /// Where output records go.
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
    /// The Prometheus endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
}

/// One camera.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// Unique camera id, used in metrics labels and output records.
    pub id: String,
    /// `rtsp://host/path`, `file:///abs/path`, a plain file path (relative to the pipeline
    /// file), or `test:PATTERN` for a GStreamer test pattern (`test:smpte`, `test:ball`).
    pub uri: String,
    /// How many frames to analyse: absent for every decoded frame.
    #[serde(default)]
    pub sampling: Option<Sampling>,
    /// Width to scale frames to before delivery; absent keeps the native size.
    #[serde(default)]
    pub width: Option<u32>,
    /// Height to scale frames to before delivery; absent keeps the native size.
    #[serde(default)]
    pub height: Option<u32>,
    /// RTSP options (only for `rtsp://` URIs).
    #[serde(default)]
    pub rtsp: RtspOptions,
    /// What a file source does at its end: `stop` (default) or `loop`.
    #[serde(default)]
    pub on_end: OnEnd,
    /// Frames buffered between the camera and the engine; when full the oldest is dropped and
    /// counted in `mlink_frames_dropped_total`.
    #[serde(default = "default_queue")]
    pub queue: usize,
}

fn default_queue() -> usize {
    4
}

/// Frame sampling: exactly one of the two fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sampling {
    /// Frames per second to keep (e.g. `1` for the paper's traffic cameras).
    #[serde(default)]
    pub fps: Option<f64>,
    /// Seconds between kept frames (e.g. `60` for the paper's building cameras).
    #[serde(default)]
    pub every_seconds: Option<f64>,
}

/// RTSP transport options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtspOptions {
    /// `tcp` (default) or `udp`.
    #[serde(default)]
    pub transport: RtspTransport,
    /// Jitter-buffer latency in milliseconds.
    #[serde(default = "default_rtsp_latency")]
    pub latency_ms: u32,
}

impl Default for RtspOptions {
    fn default() -> Self {
        Self {
            transport: RtspTransport::Tcp,
            latency_ms: default_rtsp_latency(),
        }
    }
}

fn default_rtsp_latency() -> u32 {
    200
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RtspTransport {
    #[default]
    Tcp,
    Udp,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnEnd {
    #[default]
    Stop,
    Loop,
}

/// One black-box model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Unique model id, used in metrics labels, output records, traces and link bundles.
    pub id: String,
    /// Path of the ONNX file, relative to the pipeline file.
    pub path: PathBuf,
    /// The model family, which fixes pre- and post-processing.
    pub adapter: AdapterKind,
    /// What the application consumes from the model, and what links map between.
    pub head: HeadConfig,
    /// Run on crops of the boxes of another model (secondary inference), e.g. age on faces.
    #[serde(default)]
    pub crops_from: Option<String>,
    /// Cost of the model: declared, or `auto` to profile at start-up.
    #[serde(default)]
    pub cost: CostConfig,
    /// Minimum detection score kept by detector adapters.
    #[serde(default = "default_min_score")]
    pub min_score: f32,
    /// ONNX Runtime intra-op threads for this model's session.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// An oracle link (from `mlink adapt`) applied to the model's exact output, so that the
    /// engine serves `link(model(x))`: the model adapted to this site's ground truth.
    #[serde(default)]
    pub oracle: Option<PathBuf>,
    /// The link view: how the model's raw output is encoded for the links that take it as
    /// input. Absent: the adapter family's default (see [`ViewConfig`]).
    #[serde(default)]
    pub view: Option<ViewConfig>,
}

/// A model's link view: a fixed-length encoding of its raw black-box output (more of it than
/// the head) that links take as input. Every field is optional; an absent field takes the
/// adapter family's default. Detector fields are refused for classifiers and the reverse.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewConfig {
    /// Detectors: the classes (or groups, e.g. `vehicle`) counted at every threshold.
    /// Default: `person`, `vehicle` and the head's classes (COCO detectors; with a count of
    /// every other class after them), the one class of one-class detectors.
    #[serde(default)]
    pub classes: Option<Vec<String>>,
    /// Detectors: the score thresholds at which each class is counted, ascending, in (0, 1].
    /// Default `[0.1, 0.2, 0.3, 0.5, 0.7]`.
    #[serde(default)]
    pub thresholds: Option<Vec<f32>>,
    /// Detectors: bins of the histogram of detection scores between the lowest threshold and
    /// 1; 0 leaves it out. Default 9.
    #[serde(default)]
    pub score_bins: Option<usize>,
    /// Detectors: side of the occupancy grid (`grid` x `grid` cells counting box centres at
    /// the model's `min_score`); 0 leaves it out. Default 3.
    #[serde(default)]
    pub grid: Option<usize>,
    /// Detectors: bins of the histogram of box sizes (square root of the box's share of the
    /// frame, on a halving scale); 0 leaves it out. Default 4.
    #[serde(default)]
    pub size_bins: Option<usize>,
    /// `movenet_multipose`: append the 17 keypoint confidences summed over the detected
    /// people. Default true.
    #[serde(default)]
    pub keypoints: Option<bool>,
    /// Classifiers: the class indices whose probabilities the view keeps, then the summed
    /// probability of the other classes (a compact form for large classifiers). Default:
    /// every class's probability.
    #[serde(default)]
    pub class_indices: Option<Vec<usize>>,
}

/// Default score thresholds of a detector's link view.
pub const DEFAULT_VIEW_THRESHOLDS: [f32; 5] = [0.1, 0.2, 0.3, 0.5, 0.7];
/// Default bins of a detector view's score histogram.
pub const DEFAULT_VIEW_SCORE_BINS: usize = 9;
/// Default side of a detector view's occupancy grid.
pub const DEFAULT_VIEW_GRID: usize = 3;
/// Default bins of a detector view's box-size histogram.
pub const DEFAULT_VIEW_SIZE_BINS: usize = 4;
/// Largest histogram or grid side a view accepts (keeps views small).
pub const MAX_VIEW_BINS: usize = 16;

impl ViewConfig {
    /// Checks the view against its model's family (without the model file): fields that the
    /// family does not use, thresholds, bin counts, class names and indices. Returns
    /// (field, message) pairs.
    pub fn check(&self, adapter: AdapterKind) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let detector = adapter.is_detector() || adapter == AdapterKind::MovenetMultipose;
        let set = |name: &'static str, present: bool| present.then_some(name);
        let detector_fields = [
            set("classes", self.classes.is_some()),
            set("thresholds", self.thresholds.is_some()),
            set("score_bins", self.score_bins.is_some()),
            set("grid", self.grid.is_some()),
            set("size_bins", self.size_bins.is_some()),
        ];
        if !detector {
            for f in detector_fields.into_iter().flatten() {
                out.push((
                    f,
                    format!(
                        "`{f}` is a detector view field; `{}` is a classifier (it takes `class_indices`)",
                        adapter.name()
                    ),
                ));
            }
        }
        if self.keypoints.is_some() && adapter != AdapterKind::MovenetMultipose {
            out.push((
                "keypoints",
                format!(
                    "only movenet_multipose has keypoints, not `{}`",
                    adapter.name()
                ),
            ));
        }
        if let Some(ix) = &self.class_indices {
            if detector {
                out.push((
                    "class_indices",
                    format!(
                        "`class_indices` is a classifier view field; `{}` is a detector (it takes `classes`)",
                        adapter.name()
                    ),
                ));
            } else {
                if ix.is_empty() {
                    out.push(("class_indices", "list at least one class index".into()));
                }
                if adapter == AdapterKind::EfficientnetLite
                    && let Some(bad) = ix.iter().find(|&&c| c >= IMAGENET_CLASSES)
                {
                    out.push((
                        "class_indices",
                        format!("class {bad} does not exist (ImageNet classes are 0 to 999)"),
                    ));
                }
                let mut seen = std::collections::HashSet::new();
                if let Some(dup) = ix.iter().find(|c| !seen.insert(**c)) {
                    out.push(("class_indices", format!("class {dup} is listed twice")));
                }
            }
        }
        if let Some(t) = &self.thresholds {
            if t.is_empty() {
                out.push(("thresholds", "list at least one threshold".into()));
            }
            if t.iter().any(|v| !(*v > 0.0 && *v <= 1.0)) {
                out.push(("thresholds", "every threshold must be in (0, 1]".into()));
            }
            if t.windows(2).any(|w| w[0] >= w[1]) {
                out.push(("thresholds", "thresholds must be strictly ascending".into()));
            }
        }
        for (f, v) in [
            ("score_bins", self.score_bins),
            ("grid", self.grid),
            ("size_bins", self.size_bins),
        ] {
            if let Some(v) = v
                && v > MAX_VIEW_BINS
            {
                out.push((f, format!("at most {MAX_VIEW_BINS}, found {v}")));
            }
        }
        if let Some(classes) = &self.classes {
            if classes.is_empty() {
                out.push(("classes", "list at least one class".into()));
            }
            for c in classes {
                let known = if adapter.is_coco_detector() {
                    coco_class_indices(c).is_some()
                } else {
                    adapter.single_class() == Some(c.as_str())
                };
                if !known {
                    out.push((
                        "classes",
                        format!("`{c}` is not a class `{}` detects", adapter.name()),
                    ));
                }
            }
        }
        out
    }
}

fn default_min_score() -> f32 {
    0.3
}

fn default_threads() -> usize {
    1
}

/// Model families with their own pre- and post-processing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdapterKind {
    /// CenterNet (MobileNetV3), COCO-80 detection.
    Centernet,
    /// NanoDet-m, COCO-80 detection.
    Nanodet,
    /// MoveNet multipose: up to 6 people with 17 keypoints.
    MovenetMultipose,
    /// BlazeFace (back camera) face detection.
    Blazeface,
    /// EfficientNet-Lite0 ImageNet classification.
    EfficientnetLite,
    /// dlib age or gender classifier on face crops.
    FaceAttribute,
}

/// The output head of a model: what the application consumes from it and what links map
/// between. Written as a mapping with a `kind` field and the fields of that kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "snake_case",
    deny_unknown_fields,
    try_from = "HeadFields"
)]
pub enum HeadConfig {
    /// Number of detections of the given classes (COCO names, or `vehicle`).
    Count { classes: Vec<String> },
    /// One count per listed class.
    ClassCounts { classes: Vec<String> },
    /// An `rows` x `cols` grid counting the box centres of the given classes.
    Occupancy {
        classes: Vec<String>,
        rows: usize,
        cols: usize,
    },
    /// The class probability vector (classifiers); with `groups`, the probability of each
    /// group (summed over its classes), then of the classes no group lists (`other`).
    Probs {
        #[serde(default)]
        groups: Vec<ClassGroup>,
    },
    /// The pooled feature vector (EfficientNet-Lite0: 1280 values).
    Features,
    /// Boxes of the given classes as a token sequence over a `grid` x `grid` quantisation.
    Boxes {
        classes: Vec<String>,
        grid: usize,
        max_boxes: usize,
    },
    /// The top class as a one-hot vector; with `groups`, the top group (of the grouped
    /// probabilities, `other` last) as a one-hot vector over the groups.
    Label {
        #[serde(default)]
        groups: Vec<ClassGroup>,
    },
}

/// A named group of a classifier's classes (0-based class indices), so that a label head can
/// report a handful of meaningful classes (e.g. ImageNet classes grouped into scene kinds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassGroup {
    pub name: String,
    pub classes: Vec<usize>,
}

/// ImageNet-1k classes (EfficientNet-Lite0's output).
pub const IMAGENET_CLASSES: usize = 1000;

/// The name of the implicit group of the classes that no group lists.
pub const OTHER_GROUP: &str = "other";

/// Checks a classifier head's groups against its `classes` classes: named (not `other`),
/// names unique, each listing at least one existing class, no class in two groups.
pub fn check_class_groups(groups: &[ClassGroup], classes: usize) -> Result<(), String> {
    let mut owner: std::collections::HashMap<usize, &str> = std::collections::HashMap::new();
    for (g, group) in groups.iter().enumerate() {
        if group.name.is_empty() || group.name == OTHER_GROUP {
            return Err(format!(
                "groups[{g}]: a group needs a name other than `{OTHER_GROUP}` (the classes no \
                 group lists form `{OTHER_GROUP}`)"
            ));
        }
        if groups[..g].iter().any(|o| o.name == group.name) {
            return Err(format!(
                "groups[{g}]: the name `{}` is used twice",
                group.name
            ));
        }
        if group.classes.is_empty() {
            return Err(format!("groups[{g}] (`{}`) lists no classes", group.name));
        }
        for &c in &group.classes {
            if c >= classes {
                return Err(format!(
                    "groups[{g}] (`{}`): class {c} does not exist (the model has classes 0 to {})",
                    group.name,
                    classes.saturating_sub(1)
                ));
            }
            if let Some(first) = owner.insert(c, &group.name) {
                return Err(format!(
                    "groups[{g}]: class {c} is in group `{first}` and in group `{}`",
                    group.name
                ));
            }
        }
    }
    Ok(())
}

/// The kinds of output head, as written in `head.kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadKind {
    Count,
    ClassCounts,
    Occupancy,
    Probs,
    Features,
    Boxes,
    Label,
}

impl HeadKind {
    /// Every head kind, in documentation order.
    pub const ALL: [HeadKind; 7] = [
        HeadKind::Count,
        HeadKind::ClassCounts,
        HeadKind::Occupancy,
        HeadKind::Probs,
        HeadKind::Features,
        HeadKind::Boxes,
        HeadKind::Label,
    ];

    /// The name written in pipeline files.
    pub fn name(self) -> &'static str {
        match self {
            HeadKind::Count => "count",
            HeadKind::ClassCounts => "class_counts",
            HeadKind::Occupancy => "occupancy",
            HeadKind::Probs => "probs",
            HeadKind::Features => "features",
            HeadKind::Boxes => "boxes",
            HeadKind::Label => "label",
        }
    }

    /// The fields a head of this kind takes besides `kind`, required ones first.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            HeadKind::Count | HeadKind::ClassCounts => &["classes"],
            HeadKind::Occupancy => &["classes", "rows", "cols"],
            HeadKind::Boxes => &["classes", "grid", "max_boxes"],
            HeadKind::Probs | HeadKind::Label => &["groups"],
            HeadKind::Features => &[],
        }
    }
}

impl HeadConfig {
    pub fn kind(&self) -> HeadKind {
        match self {
            HeadConfig::Count { .. } => HeadKind::Count,
            HeadConfig::ClassCounts { .. } => HeadKind::ClassCounts,
            HeadConfig::Occupancy { .. } => HeadKind::Occupancy,
            HeadConfig::Probs { .. } => HeadKind::Probs,
            HeadConfig::Features => HeadKind::Features,
            HeadConfig::Boxes { .. } => HeadKind::Boxes,
            HeadConfig::Label { .. } => HeadKind::Label,
        }
    }

    /// The class names the head counts or localises; empty for classifier heads.
    pub fn classes(&self) -> &[String] {
        match self {
            HeadConfig::Count { classes }
            | HeadConfig::ClassCounts { classes }
            | HeadConfig::Occupancy { classes, .. }
            | HeadConfig::Boxes { classes, .. } => classes,
            HeadConfig::Probs { .. } | HeadConfig::Features | HeadConfig::Label { .. } => &[],
        }
    }

    /// The class groups of a classifier head (empty: no grouping).
    pub fn groups(&self) -> &[ClassGroup] {
        match self {
            HeadConfig::Probs { groups } | HeadConfig::Label { groups } => groups,
            _ => &[],
        }
    }
}

/// A head as written in the file: the union of every kind's fields, read in one pass so that
/// a wrong or unknown field is reported at its own line, then checked against `kind`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeadFields {
    kind: HeadKind,
    #[serde(default)]
    classes: Option<Vec<String>>,
    #[serde(default)]
    rows: Option<usize>,
    #[serde(default)]
    cols: Option<usize>,
    #[serde(default)]
    grid: Option<usize>,
    #[serde(default)]
    max_boxes: Option<usize>,
    #[serde(default)]
    groups: Option<Vec<ClassGroup>>,
}

impl TryFrom<HeadFields> for HeadConfig {
    type Error = String;

    fn try_from(h: HeadFields) -> Result<Self, String> {
        let kind = h.kind;
        let present = [
            ("classes", h.classes.is_some()),
            ("rows", h.rows.is_some()),
            ("cols", h.cols.is_some()),
            ("grid", h.grid.is_some()),
            ("max_boxes", h.max_boxes.is_some()),
            ("groups", h.groups.is_some()),
        ];
        check_variant_fields("head", kind.name(), kind.fields(), &present)?;
        let need = |v: Option<usize>, name: &str| {
            v.ok_or_else(|| format!("head kind `{}` needs `{name}`", kind.name()))
        };
        // Detector heads may leave `classes` out for single-class models (faces, persons).
        let classes = h.classes.unwrap_or_default();
        Ok(match kind {
            HeadKind::Count => HeadConfig::Count { classes },
            HeadKind::ClassCounts => HeadConfig::ClassCounts { classes },
            HeadKind::Occupancy => HeadConfig::Occupancy {
                classes,
                rows: need(h.rows, "rows")?,
                cols: need(h.cols, "cols")?,
            },
            HeadKind::Boxes => HeadConfig::Boxes {
                classes,
                grid: need(h.grid, "grid")?,
                max_boxes: need(h.max_boxes, "max_boxes")?,
            },
            HeadKind::Probs => HeadConfig::Probs {
                groups: h.groups.unwrap_or_default(),
            },
            HeadKind::Features => HeadConfig::Features,
            HeadKind::Label => HeadConfig::Label {
                groups: h.groups.unwrap_or_default(),
            },
        })
    }
}

/// Rejects fields that are present but do not belong to the chosen variant of a tagged
/// mapping (a head or a sink).
fn check_variant_fields(
    what: &str,
    kind: &str,
    allowed: &[&str],
    present: &[(&str, bool)],
) -> Result<(), String> {
    let stray: Vec<&str> = present
        .iter()
        .filter(|(name, set)| *set && !allowed.contains(name))
        .map(|(name, _)| *name)
        .collect();
    if stray.is_empty() {
        return Ok(());
    }
    let allowed = if allowed.is_empty() {
        "no other fields".to_string()
    } else {
        allowed
            .iter()
            .map(|f| format!("`{f}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(format!(
        "{} {} not allowed for {what} kind `{kind}` (it takes {allowed})",
        stray
            .iter()
            .map(|f| format!("`{f}`"))
            .collect::<Vec<_>>()
            .join(", "),
        if stray.len() == 1 { "is" } else { "are" },
    ))
}

/// A model's cost.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(untagged)]
pub enum CostConfig {
    /// `auto`: profile memory and latency when the pipeline starts.
    #[default]
    #[serde(serialize_with = "serialize_auto")]
    Auto,
    /// Declared cost.
    Declared(DeclaredCost),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclaredCost {
    /// Memory the loaded model takes, in MB.
    pub memory_mb: f64,
    /// Latency of one inference, in milliseconds.
    pub latency_ms: f64,
}

fn serialize_auto<S: serde::Serializer>(s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("auto")
}

// Written by hand rather than `untagged` so that an error inside a declared cost keeps its
// own field path and line instead of becoming "did not match any variant".
impl<'de> Deserialize<'de> for CostConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct CostVisitor;

        impl<'de> serde::de::Visitor<'de> for CostVisitor {
            type Value = CostConfig;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`auto` or a mapping with `memory_mb` and `latency_ms`")
            }

            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<CostConfig, E> {
                if s == "auto" {
                    Ok(CostConfig::Auto)
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Str(s), &self))
                }
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<CostConfig, A::Error> {
                DeclaredCost::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(CostConfig::Declared)
            }
        }

        d.deserialize_any(CostVisitor)
    }
}

/// Link networks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinksConfig {
    /// A link bundle to load (from `mlink train`); absent to train from profiled samples.
    #[serde(default)]
    pub bundle: Option<PathBuf>,
    /// Hidden width as a multiple of the output length (paper: 2).
    #[serde(default = "default_hidden_factor")]
    pub hidden_factor: usize,
    /// Training epochs (paper: 100).
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    /// Mini-batch size (paper: 32).
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// RMSprop learning rate (paper: 0.01).
    #[serde(default = "default_lr")]
    pub learning_rate: f64,
    /// Share of samples held out to score links.
    #[serde(default = "default_validation")]
    pub validation_split: f64,
    /// Aligned samples collected before the first training when no bundle is given; under
    /// `policy: hybrid` with a bundle, the frames (at least 8) profiled one after another at
    /// start-up for the trigger's curves.
    #[serde(default = "default_warmup")]
    pub warmup_samples: usize,
    /// Random seed for reproducible training.
    #[serde(default)]
    pub seed: u64,
}

impl Default for LinksConfig {
    fn default() -> Self {
        Self {
            bundle: None,
            hidden_factor: default_hidden_factor(),
            epochs: default_epochs(),
            batch_size: default_batch(),
            learning_rate: default_lr(),
            validation_split: default_validation(),
            warmup_samples: default_warmup(),
            seed: 0,
        }
    }
}

fn default_hidden_factor() -> usize {
    2
}
fn default_epochs() -> usize {
    100
}
fn default_batch() -> usize {
    32
}
fn default_lr() -> f64 {
    0.01
}
fn default_validation() -> f64 {
    0.2
}
/// Warm-up samples by default (`links.warmup_samples`).
pub const DEFAULT_WARMUP_SAMPLES: usize = 200;

fn default_warmup() -> usize {
    DEFAULT_WARMUP_SAMPLES
}

/// The scheduler.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    /// The resources the executed models may use.
    pub budget: BudgetConfig,
    /// Seconds between re-selections (paper: 3600).
    #[serde(default = "default_period")]
    pub period_s: f64,
    /// Share of a period's frames on which every model runs to profile the links (paper: 0.01).
    #[serde(default = "default_profiling_ratio")]
    pub profiling_ratio: f64,
    /// Selection policy.
    #[serde(default)]
    pub policy: SelectionPolicy,
    /// Re-select early when the profiled accuracy of predicted outputs drops by more than this.
    #[serde(default)]
    pub drift_margin: Option<f64>,
    /// Under `policy: hybrid`: video seconds a frame selected by the frame-difference trigger
    /// may wait for a model that runs in turns (loaded, run on the buffered frames, unloaded).
    #[serde(default = "default_latency_allowance")]
    pub latency_allowance_s: f64,
    /// Under `policy: hybrid`: milliseconds of loading and unloading charged per MB of a model
    /// that runs in turns (on top of `LOAD_MS_FIXED`), until the engine has measured its own.
    #[serde(default = "default_load_ms_per_mb")]
    pub load_ms_per_mb: f64,
    /// Under `policy: hybrid`: video seconds a triggered model's last exact output on a camera
    /// is served at most; the next frame is then selected whatever its change (`.inf`: never).
    #[serde(default = "default_max_output_age")]
    pub max_output_age_s: f64,
}

fn default_latency_allowance() -> f64 {
    crate::control::hybrid::DEFAULT_LATENCY_S
}
fn default_max_output_age() -> f64 {
    crate::control::hybrid::DEFAULT_MAX_AGE_S
}
fn default_load_ms_per_mb() -> f64 {
    crate::control::hybrid::DEFAULT_LOAD_MS_PER_MB
}

fn default_period() -> f64 {
    3600.0
}
fn default_profiling_ratio() -> f64 {
    0.01
}

/// Budget: at least one of the two.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// Memory budget in MB (GPU memory on CUDA, host memory on CPU).
    #[serde(default)]
    pub memory_mb: Option<f64>,
    /// Time budget in milliseconds of inference per frame.
    #[serde(default)]
    pub ms_per_frame: Option<f64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectionPolicy {
    /// The paper's activation-probability greedy (Algorithm 2).
    #[default]
    Mlink,
    /// Marginal-gain greedy with partial enumeration.
    Gain,
    /// Exact optimum by enumeration (small model sets).
    Optimal,
    /// Cheapest models that fit, no links.
    Standalone,
    /// Beyond the paper: per model, exact on every frame, exact on the frames a
    /// frame-difference trigger selects (predicted in between), or predicted only; models
    /// outside the memory budget run in turns on the buffered trigger frames.
    Hybrid,
}

/// Online link adaptation (paper section 4.1).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptationConfig {
    /// `none` (default), `periodic`, `uncertainty` or `loss_prediction`.
    #[serde(default)]
    pub policy: AdaptationPolicy,
    /// For `uncertainty`: entropy (classes) or spread (regression) above which a predicted frame
    /// is queued for exact labelling.
    #[serde(default)]
    pub uncertainty_threshold: Option<f64>,
    /// Cross-site aggregation server.
    #[serde(default)]
    pub aggregator: Option<AggregatorConfig>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdaptationPolicy {
    #[default]
    None,
    Periodic,
    Uncertainty,
    LossPrediction,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregatorConfig {
    /// Base URL of `mlink aggregate`, e.g. `http://10.0.0.5:7070`.
    pub url: String,
    /// Name of the environment variable holding this edge's bearer token.
    pub token_env: String,
    /// This edge's id.
    pub edge_id: String,
}

/// An output sink. Written as a mapping with a `kind` field and the fields of that kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "snake_case",
    deny_unknown_fields,
    try_from = "SinkFields"
)]
pub enum SinkConfig {
    /// JSON lines to a file, rotated by size.
    Jsonl {
        /// File to append records to, relative to the pipeline file.
        path: PathBuf,
        /// Size in MB at which the file is rotated.
        #[serde(default = "default_rotate_mb")]
        rotate_mb: f64,
    },
    /// JSON lines to standard output.
    Stdout,
    /// MQTT, one topic per camera: `<topic_prefix>/<camera>`.
    Mqtt {
        /// Broker host name or address.
        host: String,
        /// Broker port.
        #[serde(default = "default_mqtt_port")]
        port: u16,
        /// Topic prefix; records go to `<topic_prefix>/<camera>`.
        #[serde(default = "default_topic_prefix")]
        topic_prefix: String,
        /// Records buffered while the broker is unreachable; older ones are dropped and counted.
        #[serde(default = "default_sink_buffer")]
        buffer: usize,
    },
}

/// The kinds of sink, as written in `sinks[i].kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    Jsonl,
    Stdout,
    Mqtt,
}

impl SinkKind {
    pub fn name(self) -> &'static str {
        match self {
            SinkKind::Jsonl => "jsonl",
            SinkKind::Stdout => "stdout",
            SinkKind::Mqtt => "mqtt",
        }
    }

    /// The fields a sink of this kind takes besides `kind`, required ones first.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            SinkKind::Jsonl => &["path", "rotate_mb"],
            SinkKind::Stdout => &[],
            SinkKind::Mqtt => &["host", "port", "topic_prefix", "buffer"],
        }
    }
}

/// A sink as written in the file: the union of every kind's fields (see [`HeadFields`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SinkFields {
    kind: SinkKind,
    #[serde(default)]
    path: Option<PathBuf>,
    #[serde(default)]
    rotate_mb: Option<f64>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    topic_prefix: Option<String>,
    #[serde(default)]
    buffer: Option<usize>,
}

impl TryFrom<SinkFields> for SinkConfig {
    type Error = String;

    fn try_from(s: SinkFields) -> Result<Self, String> {
        let present = [
            ("path", s.path.is_some()),
            ("rotate_mb", s.rotate_mb.is_some()),
            ("host", s.host.is_some()),
            ("port", s.port.is_some()),
            ("topic_prefix", s.topic_prefix.is_some()),
            ("buffer", s.buffer.is_some()),
        ];
        check_variant_fields("sink", s.kind.name(), s.kind.fields(), &present)?;
        Ok(match s.kind {
            SinkKind::Jsonl => SinkConfig::Jsonl {
                path: s
                    .path
                    .ok_or_else(|| "sink kind `jsonl` needs `path`".to_string())?,
                rotate_mb: s.rotate_mb.unwrap_or_else(default_rotate_mb),
            },
            SinkKind::Stdout => SinkConfig::Stdout,
            SinkKind::Mqtt => SinkConfig::Mqtt {
                host: s
                    .host
                    .ok_or_else(|| "sink kind `mqtt` needs `host`".to_string())?,
                port: s.port.unwrap_or_else(default_mqtt_port),
                topic_prefix: s.topic_prefix.unwrap_or_else(default_topic_prefix),
                buffer: s.buffer.unwrap_or_else(default_sink_buffer),
            },
        })
    }
}

fn default_rotate_mb() -> f64 {
    64.0
}
fn default_mqtt_port() -> u16 {
    1883
}
fn default_topic_prefix() -> String {
    "mlink".into()
}
fn default_sink_buffer() -> usize {
    10_000
}

/// The Prometheus endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address to serve `/metrics` on; `null` disables it.
    #[serde(default = "default_listen")]
    pub listen: Option<String>,
    /// Name of the environment variable holding the bearer token that the camera API's
    /// mutating calls (`POST /api/v1/cameras`, `DELETE /api/v1/cameras/{id}`) require;
    /// absent: those calls are refused.
    #[serde(default)]
    pub api_token_env: Option<String>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            api_token_env: None,
        }
    }
}

fn default_listen() -> Option<String> {
    Some("127.0.0.1:9464".into())
}

impl AdapterKind {
    /// Every adapter, in documentation order.
    pub const ALL: [AdapterKind; 6] = [
        AdapterKind::Centernet,
        AdapterKind::Nanodet,
        AdapterKind::MovenetMultipose,
        AdapterKind::Blazeface,
        AdapterKind::EfficientnetLite,
        AdapterKind::FaceAttribute,
    ];

    /// The name written in pipeline files.
    pub fn name(self) -> &'static str {
        match self {
            AdapterKind::Centernet => "centernet",
            AdapterKind::Nanodet => "nanodet",
            AdapterKind::MovenetMultipose => "movenet_multipose",
            AdapterKind::Blazeface => "blazeface",
            AdapterKind::EfficientnetLite => "efficientnet_lite",
            AdapterKind::FaceAttribute => "face_attribute",
        }
    }

    /// Whether the model yields boxes that another model can run on (`crops_from`).
    pub fn is_detector(self) -> bool {
        matches!(
            self,
            AdapterKind::Centernet | AdapterKind::Nanodet | AdapterKind::Blazeface
        )
    }

    /// Whether the model detects the COCO-80 classes (its heads name COCO classes).
    pub fn is_coco_detector(self) -> bool {
        matches!(self, AdapterKind::Centernet | AdapterKind::Nanodet)
    }

    /// The single class a one-class detector finds, which its heads may name or leave out.
    pub fn single_class(self) -> Option<&'static str> {
        match self {
            AdapterKind::MovenetMultipose => Some("person"),
            AdapterKind::Blazeface => Some("face"),
            _ => None,
        }
    }

    /// The output heads this family can produce.
    pub fn heads(self) -> &'static [HeadKind] {
        match self {
            AdapterKind::Centernet | AdapterKind::Nanodet => &[
                HeadKind::Count,
                HeadKind::ClassCounts,
                HeadKind::Occupancy,
                HeadKind::Boxes,
            ],
            AdapterKind::MovenetMultipose => &[HeadKind::Count],
            AdapterKind::Blazeface => &[HeadKind::Count, HeadKind::Occupancy, HeadKind::Boxes],
            AdapterKind::EfficientnetLite => {
                &[HeadKind::Probs, HeadKind::Features, HeadKind::Label]
            }
            AdapterKind::FaceAttribute => &[HeadKind::Probs, HeadKind::Label],
        }
    }
}

/// The COCO-80 class names in the detectors' class-index order.
pub const COCO_CLASSES: [&str; 80] = [
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
];

/// Class groups a COCO head may name instead of single classes.
pub const COCO_GROUPS: [(&str, &[&str]); 2] = [
    (
        "vehicle",
        &["bicycle", "car", "motorcycle", "bus", "train", "truck"],
    ),
    // Every class but `person`: the things in a scene (an object count beside a person count).
    ("object", &NON_PERSON_CLASSES),
];

/// The COCO-80 classes other than `person` (the group `object`).
const NON_PERSON_CLASSES: [&str; 79] = {
    let mut out = [""; 79];
    let mut i = 0;
    while i < 79 {
        out[i] = COCO_CLASSES[i + 1];
        i += 1;
    }
    out
};

/// The COCO class indices a head class name stands for (a class or a group); `None` when
/// the name is neither.
pub fn coco_class_indices(name: &str) -> Option<Vec<usize>> {
    if let Some(i) = COCO_CLASSES.iter().position(|c| *c == name) {
        return Some(vec![i]);
    }
    COCO_GROUPS
        .iter()
        .find(|(g, _)| *g == name)
        .map(|(_, members)| {
            members
                .iter()
                .filter_map(|m| COCO_CLASSES.iter().position(|c| c == m))
                .collect()
        })
}
