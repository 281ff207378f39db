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

/// The output head of a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
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
    /// The class probability vector (classifiers).
    Probs,
    /// The pooled feature vector (EfficientNet-Lite0: 1280 values).
    Features,
    /// Boxes of the given classes as a token sequence over a `grid` x `grid` quantisation.
    Boxes {
        classes: Vec<String>,
        grid: usize,
        max_boxes: usize,
    },
    /// The top class as a one-hot vector.
    Label,
}

/// A model's cost.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CostConfig {
    /// `auto`: profile memory and latency when the pipeline starts.
    #[default]
    #[serde(with = "auto_literal")]
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

mod auto_literal {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("auto")
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<(), D::Error> {
        let s = String::deserialize(d)?;
        if s == "auto" {
            Ok(())
        } else {
            Err(serde::de::Error::custom(format!(
                "expected `auto` or {{memory_mb, latency_ms}}, found {s:?}"
            )))
        }
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
    /// Aligned samples collected before the first training when no bundle is given.
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
fn default_warmup() -> usize {
    200
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

/// An output sink.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkConfig {
    /// JSON lines to a file, rotated by size.
    Jsonl {
        path: PathBuf,
        #[serde(default = "default_rotate_mb")]
        rotate_mb: f64,
    },
    /// JSON lines to standard output.
    Stdout,
    /// MQTT, one topic per camera: `<topic_prefix>/<camera>`.
    Mqtt {
        host: String,
        #[serde(default = "default_mqtt_port")]
        port: u16,
        #[serde(default = "default_topic_prefix")]
        topic_prefix: String,
        /// Records buffered while the broker is unreachable; older ones are dropped and counted.
        #[serde(default = "default_sink_buffer")]
        buffer: usize,
    },
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
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
        }
    }
}

fn default_listen() -> Option<String> {
    Some("127.0.0.1:9464".into())
}
