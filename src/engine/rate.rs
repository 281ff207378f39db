//! The cameras' offered rate as a time budget: a set of models keeps up with the cameras only
//! when its time per frame times the frames per second analysed fits the cores the models
//! run on. The engine computes that budget here and hands it to the controller
//! ([`crate::control::Controller::set_rate_budget`]), which selects under it.

use crate::config::Pipeline;
use crate::control::Settings;

/// Share of the cores the models may take: the rest decodes the cameras, predicts with the
/// links and writes the records.
pub const RATE_HEADROOM: f64 = 0.8;

/// The largest batch chosen without `--batch` (one frame per camera up to this).
pub const MAX_AUTO_BATCH: usize = 16;

/// Frames per second the pipeline's cameras offer after sampling (cameras without sampling
/// count at [`crate::control::controller::ASSUMED_FPS`]).
pub fn offered_fps(cfg: &Pipeline) -> f64 {
    if cfg.cameras.is_empty() {
        return 0.0;
    }
    Settings::from_pipeline(cfg).fps_hint
}

/// The time per frame (ms of core time) a set may take so that `fps` frames a second fit
/// `cores` cores with [`RATE_HEADROOM`]; None when nothing is offered.
pub fn implied_ms_per_frame(fps: f64, cores: usize) -> Option<f64> {
    (fps.is_finite() && fps > 0.0).then(|| cores.max(1) as f64 * 1000.0 * RATE_HEADROOM / fps)
}

/// The machine's cores (1 when unknown).
pub fn machine_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Workers for a run: as asked, or the machine's cores for 0.
pub fn resolve_workers(asked: usize) -> usize {
    if asked == 0 { machine_cores() } else { asked }
}

/// Batch size for a run: as asked, or one frame per camera (up to [`MAX_AUTO_BATCH`]) for 0.
pub fn resolve_batch(asked: usize, cameras: usize) -> usize {
    if asked == 0 {
        cameras.clamp(1, MAX_AUTO_BATCH)
    } else {
        asked
    }
}

/// The cameras of `cfg`, each repeated `copies` times (copies named `<id>-2`, `<id>-3`, ...).
pub fn copy_cameras(cfg: &mut Pipeline, copies: usize) {
    if copies <= 1 {
        return;
    }
    let originals = std::mem::take(&mut cfg.cameras);
    for cam in &originals {
        for i in 1..=copies {
            let mut c = cam.clone();
            if i > 1 {
                c.id = format!("{}-{i}", cam.id);
            }
            cfg.cameras.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_budget_shrinks_with_the_offered_rate_and_grows_with_the_cores() {
        // 4 cameras at 5 fps on 2 cores: 80 ms of core time per frame.
        let b = implied_ms_per_frame(20.0, 2).unwrap();
        assert!((b - 80.0).abs() < 1e-9, "{b}");
        assert!(implied_ms_per_frame(40.0, 2).unwrap() < b);
        assert!(implied_ms_per_frame(20.0, 4).unwrap() > b);
        assert_eq!(implied_ms_per_frame(0.0, 2), None);
        assert_eq!(implied_ms_per_frame(f64::NAN, 2), None);
    }

    #[test]
    fn automatic_batches_take_one_frame_per_camera() {
        assert_eq!(resolve_batch(0, 4), 4);
        assert_eq!(resolve_batch(0, 0), 1);
        assert_eq!(resolve_batch(0, 100), MAX_AUTO_BATCH);
        assert_eq!(resolve_batch(3, 100), 3);
        assert_eq!(resolve_workers(2), 2);
        assert!(resolve_workers(0) >= 1);
    }
}
