//! What an operator sees of a running engine: the [`StatusBoard`] the engine updates through
//! a few calls (a frame served, a selection made, the controller's phase, the cameras
//! configured), the JSON it answers with, the status page and the `/api/v1` API served beside
//! `/metrics` ([`api`]), snapshots encoded on request ([`snapshot`]) and the camera edits of
//! the pipeline file ([`edit`]).
//!
//! The frame path only moves handles here: the latest frame of each camera is kept as the
//! engine's own reference-counted buffer (one per camera, replaced by the next), and JPEG
//! encoding happens on the HTTP thread when a snapshot is asked for.

pub mod api;
pub mod edit;
pub mod snapshot;

use crate::config::{CameraConfig, Pipeline};
use crate::control::{Cause, Controller, NextPeriod, Selected};
use crate::engine::record::OutputRecord;
use crate::frame::Frame;
use crate::metrics::{Metrics, SOURCE_STATES};
use crate::models::Detection;
use crate::schedule::Budget;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

/// Format version of the `/api/v1/status` and `/api/v1/links` answers.
pub const STATUS_VERSION: u32 = 1;

/// Re-selections the board remembers.
const RECENT_SELECTIONS: usize = 20;

/// Frame times kept per camera for its analysed frame rate.
const FPS_WINDOW: usize = 20;

/// A pipeline edit asked for through the API, applied by the engine's frame loop between two
/// frames (the hot-reload path), which answers on `reply`.
pub struct Mutation {
    /// The complete new pipeline text, already validated.
    pub text: String,
    /// The camera that must run afterwards (an addition), if any.
    pub expect_camera: Option<String>,
    pub reply: tokio::sync::oneshot::Sender<Result<(), String>>,
}

/// The live state behind the status page; see the module.
pub struct StatusBoard {
    state: Mutex<BoardState>,
    metrics: Arc<Metrics>,
    pipeline_path: PathBuf,
    /// The API's bearer token, read from `metrics.api_token_env` at start-up.
    token: Option<String>,
    token_env: Option<String>,
    mutations_tx: crossbeam_channel::Sender<Mutation>,
    mutations_rx: crossbeam_channel::Receiver<Mutation>,
    /// Snapshots encoded so far (they are encoded only on request).
    encoded: AtomicU64,
}

#[derive(Default)]
struct BoardState {
    pipeline: String,
    models: Vec<String>,
    cameras: BTreeMap<String, CameraBoard>,
    active: Vec<String>,
    phase: &'static str,
    next: Option<NextPeriod>,
    /// Video time of the latest frame the controller saw.
    video_s: Option<f64>,
    /// Per model: the accuracy its predictions measured on the latest profiling frames.
    measured: Vec<Option<f64>>,
    /// Per model: 1 when active, else its ensemble's score from the active set.
    ensembles: Vec<f64>,
    link_matrix: Vec<Vec<f64>>,
    objective: Option<f64>,
    selections: VecDeque<SelectionEntry>,
    budget: Budget,
    /// The measured time per frame (ms), when the budget bounds it.
    ms_used: Option<f64>,
}

#[derive(Default)]
struct CameraBoard {
    uri: String,
    /// The latest analysed frame (the engine's buffer, shared, not copied).
    latest: Option<Frame>,
    /// Boxes of the detectors that ran exactly on `latest`, by model index.
    detections: Vec<(usize, Vec<Detection>)>,
    /// The latest record of each model on this camera.
    outputs: BTreeMap<String, OutputRecord>,
    recent: VecDeque<Instant>,
    frames: u64,
    last_frame_unix_s: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
struct SelectionEntry {
    unix_s: f64,
    cause: Cause,
    frames_seen: u64,
    active: Vec<String>,
    objective: f64,
    reason: String,
}

/// A camera's latest frame and the boxes drawn on its overlay, by model index.
type LatestFrame = (Frame, Vec<(usize, Vec<Detection>)>);

/// The page's data (`GET /api/v1/status`).
#[derive(Clone, Debug, Serialize)]
pub struct StatusView {
    pub v: u32,
    pub pipeline: String,
    pub unix_s: f64,
    pub phase: &'static str,
    pub active: Vec<String>,
    pub next_reselection: Option<NextReselection>,
    pub expected_accuracy: Option<f64>,
    pub budget: Vec<BudgetView>,
    pub cameras: Vec<CameraView>,
    pub models: Vec<ModelView>,
    pub reselections: Vec<serde_json::Value>,
    /// Whether the camera API accepts mutations (a token is configured).
    pub mutations_enabled: bool,
    /// Snapshots encoded since the start: they are encoded only when asked for, so this
    /// stays still while frames flow and nobody asks.
    pub snapshots_encoded: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct NextReselection {
    /// The period's end, in the period clock's unit.
    pub at: NextPeriod,
    /// Video seconds from the latest frame to the period's end (periods in seconds).
    pub in_video_s: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct BudgetView {
    pub resource: &'static str,
    pub budget: Option<f64>,
    pub used: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct CameraView {
    pub id: String,
    pub uri: String,
    pub state: String,
    pub fps: Option<f64>,
    pub frames: u64,
    pub dropped: u64,
    pub reconnects: u64,
    pub last_frame_unix_s: Option<f64>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// The latest record of every model on this camera.
    pub outputs: Vec<OutputRecord>,
    /// Boxes drawn on the overlay snapshot: per detector that ran exactly on the latest frame.
    pub boxes: Vec<BoxesView>,
}

#[derive(Clone, Debug, Serialize)]
pub struct BoxesView {
    pub model: String,
    pub color: String,
    pub count: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct ModelView {
    pub id: String,
    pub active: bool,
    /// The overlay colour of the model's boxes.
    pub color: String,
    /// Its predictions' accuracy measured on the latest profiling frames.
    pub measured_accuracy: Option<f64>,
    /// Its ensemble's score from the active set (1 when active).
    pub ensemble_score: Option<f64>,
    pub executions: u64,
    pub predictions: u64,
    pub failures: u64,
}

/// The link score matrix (`GET /api/v1/links`).
#[derive(Clone, Debug, Serialize)]
pub struct LinksView {
    pub v: u32,
    pub models: Vec<String>,
    /// `scores[source][target]`; the diagonal is null.
    pub scores: Vec<Vec<Option<f64>>>,
    /// Per target: its ensemble's score from the active set.
    pub ensembles: Vec<f64>,
}

fn unix_s(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A fixed colour per model index, shared by the overlay and the page's legend.
pub fn model_color(m: usize) -> [u8; 3] {
    const PALETTE: [[u8; 3]; 8] = [
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
    ];
    PALETTE[m % PALETTE.len()]
}

fn hex(c: [u8; 3]) -> String {
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

impl StatusBoard {
    /// A board for the pipeline at `pipeline_path`, reading the API token from the variable
    /// the file names (`metrics.api_token_env`).
    pub fn new(pipeline_path: &Path, cfg: &Pipeline, metrics: Arc<Metrics>) -> Self {
        let token_env = cfg.metrics.api_token_env.clone();
        let token = token_env
            .as_deref()
            .and_then(|name| std::env::var(name).ok())
            .filter(|t| !t.trim().is_empty());
        if let (Some(name), None) = (&token_env, &token) {
            tracing::warn!(
                variable = %name,
                "the camera API's token variable is unset or empty: adding and removing \
                 cameras through the API is refused"
            );
        }
        let (mutations_tx, mutations_rx) = crossbeam_channel::bounded(4);
        let board = StatusBoard {
            state: Mutex::new(BoardState {
                pipeline: pipeline_path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                models: cfg.models.iter().map(|m| m.id.clone()).collect(),
                phase: "starting",
                ..BoardState::default()
            }),
            metrics,
            pipeline_path: pipeline_path.to_path_buf(),
            token,
            token_env,
            mutations_tx,
            mutations_rx,
            encoded: AtomicU64::new(0),
        };
        board.cameras_configured(&cfg.cameras);
        board
    }

    fn lock(&self) -> MutexGuard<'_, BoardState> {
        // A panic while holding the lock leaves plain data behind: keep serving it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn pipeline_path(&self) -> &Path {
        &self.pipeline_path
    }

    /// Snapshots encoded so far.
    pub fn snapshots_encoded(&self) -> u64 {
        self.encoded.load(Ordering::Relaxed)
    }

    /// Hook: the configured cameras (at start-up and after every applied reload); cameras
    /// no longer configured leave the board.
    pub fn cameras_configured(&self, cameras: &[CameraConfig]) {
        let mut s = self.lock();
        s.cameras
            .retain(|id, _| cameras.iter().any(|c| &c.id == id));
        for c in cameras {
            let cam = s.cameras.entry(c.id.clone()).or_default();
            if cam.uri != c.uri {
                *cam = CameraBoard {
                    uri: c.uri.clone(),
                    ..CameraBoard::default()
                };
            }
        }
    }

    /// Hook: a frame was served (or profiled): its buffer, the boxes of the models that ran
    /// on it (`detections[m]`, by model index) and the records written for it.
    pub fn frame_served(
        &self,
        frame: &Frame,
        detections: &[Option<Vec<Detection>>],
        records: &[OutputRecord],
    ) {
        let mut s = self.lock();
        let Some(cam) = s.cameras.get_mut(&*frame.camera) else {
            return;
        };
        cam.latest = Some(frame.clone());
        cam.detections = detections
            .iter()
            .enumerate()
            .filter_map(|(m, d)| Some((m, d.as_ref()?.clone())))
            .filter(|(_, d)| !d.is_empty())
            .collect();
        for r in records {
            cam.outputs.insert(r.model.clone(), r.clone());
        }
        cam.frames += 1;
        cam.last_frame_unix_s = Some(unix_s(frame.wall_time));
        if cam.recent.len() == FPS_WINDOW {
            cam.recent.pop_front();
        }
        cam.recent.push_back(Instant::now());
    }

    /// Hook: the controller selected an active set.
    pub fn selected(&self, sel: &Selected, ids: &[String]) {
        let mut s = self.lock();
        s.active = sel.to.iter().map(|m| ids[m].clone()).collect();
        if !sel.link_matrix.is_empty() {
            s.link_matrix = sel.link_matrix.clone();
        }
        if !sel.ensembles.is_empty() {
            s.ensembles = sel.ensembles.clone();
        }
        s.measured.resize(ids.len(), None);
        for (j, m) in sel.measured.iter().enumerate() {
            if let (Some(acc), Some(slot)) = (m, s.measured.get_mut(j)) {
                *slot = Some(*acc);
            }
        }
        s.objective = Some(sel.objective);
        if s.selections.len() == RECENT_SELECTIONS {
            s.selections.pop_front();
        }
        let active = s.active.clone();
        s.selections.push_back(SelectionEntry {
            unix_s: unix_s(SystemTime::now()),
            cause: sel.cause,
            frames_seen: sel.frames_seen,
            active,
            objective: sel.objective,
            reason: sel.reason.clone(),
        });
    }

    /// Hook: the controller's phase, active set and next re-selection, after each frame (the
    /// active set also changes without a selection, e.g. while links are trained).
    pub fn controller(&self, ctl: &Controller, video_s: f64) {
        let mut s = self.lock();
        s.active = ctl
            .active()
            .iter()
            .filter_map(|m| s.models.get(m).cloned())
            .collect();
        s.phase = ctl.phase_label();
        s.next = ctl.next_reselection();
        s.video_s = Some(video_s);
        s.budget = *ctl.budget();
        s.ms_used = ctl.measured_ms_per_frame();
    }

    /// The next mutation the API asks for, if any (polled by the frame loop).
    pub fn next_mutation(&self) -> Option<Mutation> {
        self.mutations_rx.try_recv().ok()
    }

    /// The page's data.
    pub fn view(&self) -> StatusView {
        let s = self.lock();
        let m = &self.metrics;
        let cameras = s
            .cameras
            .iter()
            .map(|(id, c)| {
                let state = SOURCE_STATES
                    .iter()
                    .copied()
                    .find(|st: &&str| {
                        m.source_state
                            .get_metric_with_label_values(&[id.as_str(), *st])
                            .is_ok_and(|g| g.get() == 1)
                    })
                    .unwrap_or("starting")
                    .to_string();
                let fps = match (c.recent.front(), c.recent.back()) {
                    (Some(a), Some(b)) if c.recent.len() > 1 => {
                        let secs = b.duration_since(*a).as_secs_f64();
                        (secs > 0.0).then(|| (c.recent.len() - 1) as f64 / secs)
                    }
                    _ => None,
                };
                CameraView {
                    id: id.clone(),
                    uri: c.uri.clone(),
                    state,
                    fps,
                    frames: c.frames,
                    dropped: counter(&m.frames_dropped, id),
                    reconnects: counter(&m.source_reconnects, id),
                    last_frame_unix_s: c.last_frame_unix_s,
                    width: c.latest.as_ref().map(|f| f.width),
                    height: c.latest.as_ref().map(|f| f.height),
                    outputs: s
                        .models
                        .iter()
                        .filter_map(|model| c.outputs.get(model).cloned())
                        .collect(),
                    boxes: c
                        .detections
                        .iter()
                        .map(|(mi, d)| BoxesView {
                            model: s.models.get(*mi).cloned().unwrap_or_default(),
                            color: hex(model_color(*mi)),
                            count: d.len(),
                        })
                        .collect(),
                }
            })
            .collect();
        let models = s
            .models
            .iter()
            .enumerate()
            .map(|(i, id)| ModelView {
                id: id.clone(),
                active: s.active.contains(id),
                color: hex(model_color(i)),
                measured_accuracy: s.measured.get(i).copied().flatten(),
                ensemble_score: s.ensembles.get(i).copied(),
                executions: counter(&m.model_executions, id),
                predictions: counter(&m.model_predictions, id),
                failures: counter(&m.model_failures, id),
            })
            .collect();
        let budget = vec![
            BudgetView {
                resource: "memory_mb",
                budget: s.budget.memory_mb,
                used: m
                    .budget_used
                    .get_metric_with_label_values(&["memory_mb"])
                    .map_or(0.0, |g| g.get()),
            },
            BudgetView {
                resource: "ms_per_frame",
                budget: s.budget.ms_per_frame,
                used: s.ms_used.unwrap_or(0.0),
            },
        ];
        let next_reselection = s.next.map(|at| NextReselection {
            at,
            in_video_s: match (at, s.video_s) {
                (NextPeriod::AtVideoS(t), Some(now)) => Some((t - now).max(0.0)),
                _ => None,
            },
        });
        StatusView {
            v: STATUS_VERSION,
            pipeline: s.pipeline.clone(),
            unix_s: unix_s(SystemTime::now()),
            phase: s.phase,
            active: s.active.clone(),
            next_reselection,
            expected_accuracy: s.objective,
            budget,
            cameras,
            models,
            reselections: s
                .selections
                .iter()
                .rev()
                .filter_map(|e| serde_json::to_value(e).ok())
                .collect(),
            mutations_enabled: self.token.is_some(),
            snapshots_encoded: self.snapshots_encoded(),
        }
    }

    /// The link score matrix the latest selection used.
    pub fn links(&self) -> LinksView {
        let s = self.lock();
        let k = s.models.len();
        let scores = (0..k)
            .map(|i| {
                (0..k)
                    .map(|j| {
                        if i == j {
                            None
                        } else {
                            s.link_matrix.get(i).and_then(|r| r.get(j)).copied()
                        }
                    })
                    .collect()
            })
            .collect();
        LinksView {
            v: STATUS_VERSION,
            models: s.models.clone(),
            scores,
            ensembles: s.ensembles.clone(),
        }
    }

    /// The latest frame of a camera and the boxes to draw on it (None: unknown camera;
    /// Some(None): no frame yet).
    fn latest(&self, camera: &str) -> Option<Option<LatestFrame>> {
        let s = self.lock();
        let c = s.cameras.get(camera)?;
        Some(c.latest.clone().map(|f| (f, c.detections.clone())))
    }
}

fn counter(c: &prometheus::IntCounterVec, label: &str) -> u64 {
    c.get_metric_with_label_values(&[label])
        .map_or(0, |c| c.get())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::record::{Provenance, RECORD_VERSION};
    use crate::output::OutputValue;
    use crate::schedule::ModelSet;

    fn pipeline() -> Pipeline {
        let text = "version: 1\ncameras:\n  - id: a\n    uri: test:ball\n  - id: b\n    uri: test:smpte\nmodels:\n  - id: det\n    path: x.onnx\n    adapter: centernet\n    head: { kind: count, classes: [person] }\n    cost: { memory_mb: 1, latency_ms: 1 }\n  - id: cls\n    path: y.onnx\n    adapter: centernet\n    head: { kind: count, classes: [car] }\n    cost: { memory_mb: 1, latency_ms: 1 }\nscheduler:\n  budget: { memory_mb: 1 }\n";
        crate::config::parse_str(text, "p.yaml").unwrap()
    }

    fn record(camera: &str, model: &str, provenance: Provenance) -> OutputRecord {
        OutputRecord {
            v: RECORD_VERSION,
            camera: camera.into(),
            seq: 0,
            pts_s: None,
            time: 0.0,
            model: model.into(),
            provenance,
            value: Some(OutputValue::Vector(vec![2.0])),
        }
    }

    fn detection() -> Detection {
        Detection {
            class: 0,
            score: 0.9,
            x1: 1.0,
            y1: 1.0,
            x2: 5.0,
            y2: 5.0,
            keypoints: vec![],
        }
    }

    #[test]
    fn the_board_keeps_one_frame_per_camera_and_the_latest_outputs() {
        let cfg = pipeline();
        let board = StatusBoard::new(Path::new("p.yaml"), &cfg, Arc::new(Metrics::new()));
        let v = board.view();
        let ids: Vec<&str> = v.cameras.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(matches!(board.latest("a"), Some(None)), "no frame yet");
        assert!(board.latest("nope").is_none());
        for seq in 0..3u64 {
            let f = Frame::new("a".into(), seq, None, 4, 4, vec![seq as u8; 48].into()).unwrap();
            let exact = record("a", "det", Provenance::Exact { profiling: false });
            let predicted = record(
                "a",
                "cls",
                Provenance::Predicted {
                    sources: vec!["det".into()],
                    score: 0.7,
                    uncertainty: 0.1,
                },
            );
            board.frame_served(&f, &[Some(vec![detection()]), None], &[exact, predicted]);
        }
        let (frame, boxes) = board.latest("a").unwrap().unwrap();
        assert_eq!(frame.seq, 2, "only the latest frame is kept");
        assert_eq!(boxes.len(), 1);
        let v = board.view();
        let a = &v.cameras[0];
        assert_eq!(a.frames, 3);
        assert_eq!(a.outputs.len(), 2);
        assert_eq!(a.outputs[1].model, "cls");
        assert!(matches!(
            a.outputs[1].provenance,
            Provenance::Predicted { .. }
        ));
        assert_eq!(a.boxes[0].model, "det");
        assert_eq!(a.boxes[0].count, 1);
        assert_eq!(v.snapshots_encoded, 0);
        assert!(!v.mutations_enabled, "no token configured");

        // A camera dropped from the configuration leaves the board.
        board.cameras_configured(&cfg.cameras[1..]);
        let ids: Vec<String> = board.view().cameras.into_iter().map(|c| c.id).collect();
        assert_eq!(ids, ["b"]);
    }

    #[test]
    fn selections_fill_the_link_matrix_and_the_history() {
        let cfg = pipeline();
        let board = StatusBoard::new(Path::new("p.yaml"), &cfg, Arc::new(Metrics::new()));
        let ids = vec!["det".to_string(), "cls".to_string()];
        let sel = Selected {
            from: ModelSet::empty(2),
            to: ModelSet::from_indices(2, [0]),
            cause: Cause::Trained,
            at: Some(10),
            frames_seen: 11,
            objective: 0.8,
            reason: "best set".into(),
            expected: Some(0.6),
            link_matrix: vec![vec![1.0, 0.6], vec![0.4, 1.0]],
            ensembles: vec![1.0, 0.6],
            measured: vec![None, Some(0.55)],
            predict: true,
            plan: None,
            rate_unmet: false,
        };
        board.selected(&sel, &ids);
        let l = board.links();
        assert_eq!(l.scores, vec![vec![None, Some(0.6)], vec![Some(0.4), None]]);
        let v = board.view();
        assert_eq!(v.active, ["det"]);
        assert_eq!(v.models[1].measured_accuracy, Some(0.55));
        assert_eq!(v.reselections.len(), 1);
        assert_eq!(v.reselections[0]["cause"], "trained");
    }
}
