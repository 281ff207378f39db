//! Model costs: host memory (RSS growth from session creation plus a first run) and latency
//! (median of warm runs, split into pre-processing, the session run and post-processing).

use super::ModelError;
use super::loaded::{LoadedModel, Timing};
use super::postprocess::Detection;
use crate::config::ModelConfig;
use crate::frame::Frame;
use crate::metrics::Metrics;
use std::path::Path;
use std::sync::Arc;

/// Measured cost of one model.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ModelCost {
    pub model: String,
    /// Host RSS growth from creating the session and running it once, in MB.
    pub memory_mb: f64,
    /// Median total latency of the warm runs, in ms.
    pub latency_ms: f64,
    /// Medians of the parts, in ms.
    pub pre_ms: f64,
    pub run_ms: f64,
    pub post_ms: f64,
    /// Warm runs measured.
    pub runs: usize,
}

impl ModelCost {
    /// Share of pre- and post-processing in the median latency.
    pub fn overhead_share(&self) -> f64 {
        if self.latency_ms > 0.0 {
            (self.pre_ms + self.post_ms) / self.latency_ms
        } else {
            0.0
        }
    }
}

/// Resident set size of this process in bytes (`/proc/self/statm`); 0 where unavailable.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
            })
        })
        .map_or(0, |kb| kb * 1024)
}

/// A deterministic textured frame for timing runs when no footage is at hand (latency of these
/// fixed-shape models does not depend on the picture).
pub fn synthetic_frame(width: u32, height: u32) -> Frame {
    let mut rgb = Vec::with_capacity(width as usize * height as usize * 3);
    let mut state = 0x2545_f491_u32;
    for y in 0..height {
        for x in 0..width {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let noise = state & 31;
            rgb.push(((x * 255 / width.max(1)) / 2 + noise) as u8);
            rgb.push(((y * 255 / height.max(1)) / 2 + noise) as u8);
            rgb.push((((x + y) % 64) * 2 + noise) as u8);
        }
    }
    // The buffer has exactly width * height * 3 bytes by construction.
    Frame::new(
        Arc::from("synthetic"),
        0,
        None,
        width,
        height,
        Arc::from(rgb),
    )
    .unwrap_or_else(|_| unreachable!("buffer sized from its dimensions"))
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Loads `cfg`, runs it once on `frame` to measure memory, then `warm_runs` times to measure
/// latency, and unloads it. A model with `crops_from` is timed on one crop covering the frame.
pub fn profile_model(
    cfg: &ModelConfig,
    base_dir: &Path,
    frame: &Frame,
    warm_runs: usize,
    metrics: &Metrics,
) -> Result<ModelCost, ModelError> {
    let whole = [Detection {
        class: 0,
        score: 1.0,
        x1: 0.0,
        y1: 0.0,
        x2: frame.width as f32,
        y2: frame.height as f32,
        keypoints: vec![],
    }];
    let crops = cfg.crops_from.as_ref().map(|_| &whole[..]);
    let before = rss_bytes();
    let mut model = LoadedModel::load(cfg, base_dir, metrics)?;
    model.infer(frame, crops)?;
    let memory_mb = rss_bytes().saturating_sub(before) as f64 / 1e6;
    let timings: Vec<Timing> = (0..warm_runs.max(1))
        .map(|_| model.infer(frame, crops).map(|i| i.timing))
        .collect::<Result<_, _>>()?;
    drop(model);
    release_freed_memory();
    metrics
        .model_unloads
        .with_label_values(&[cfg.id.as_str()])
        .inc();
    Ok(ModelCost {
        model: cfg.id.clone(),
        memory_mb,
        latency_ms: median(timings.iter().map(Timing::total_ms).collect()),
        pre_ms: median(timings.iter().map(|t| t.pre_ms).collect()),
        run_ms: median(timings.iter().map(|t| t.run_ms).collect()),
        post_ms: median(timings.iter().map(|t| t.post_ms).collect()),
        runs: timings.len(),
    })
}

/// Hands memory freed by dropped sessions back to the operating system. glibc keeps freed
/// heap pages in its arenas (ONNX Runtime's weights and buffers are many mid-sized blocks), so
/// without this the RSS of a process stays at its high-water mark after an unload.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim only walks glibc's own arenas; it takes no pointers from us.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// Keeps glibc from raising its mmap threshold when large blocks are freed (its default
/// behaviour), so that model weights and buffers stay in their own mappings and go back to the
/// system when a session is dropped, instead of fragmenting the heap on the next load.
pub(crate) fn pin_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const M_MMAP_THRESHOLD: std::ffi::c_int = -3;
        unsafe extern "C" {
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        // SAFETY: mallopt only changes glibc's allocation policy for later allocations.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 128 * 1024);
        }
    }
}
