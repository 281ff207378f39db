//! The frame loop: frames from the cameras and the reload timer become controller events,
//! until the cameras end, a limit is reached or a signal stops the engine.
//!
//! Each turn takes the frames the cameras have ready (up to the batch size, one camera after
//! the other), runs the serving set on all of them at once ([`Driver::run_batch`]), then hands
//! them to the controller one by one ([`Driver::on_frame_with`]). With a batch of one, each
//! frame is run as the controller says, one at a time. Frames taken in while the models ran
//! in turns ([`super::backlog`]) are served first, in batches, oldest first.

use super::driver::Driver;
use super::reload::{self, Cameras};
use super::{EngineError, RunOptions};
use crate::frame::Frame;
use crate::ingest::IngestManager;
use crossbeam_channel::{Receiver, Select};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Adds the cameras and runs frames through the driver until the end.
pub(super) fn run_loop(
    d: &mut Driver,
    pipeline_path: &Path,
    base: &Path,
    opts: &RunOptions,
    stop: &AtomicBool,
) -> Result<(), EngineError> {
    let ingest = IngestManager::with_options(
        d.metrics.clone(),
        crate::ingest::SourceOptions {
            offline: opts.offline,
            ..Default::default()
        },
    )?;
    let mut cameras: Cameras = BTreeMap::new();
    for cam in &d.cfg.cameras {
        let rx = ingest.add_camera(cam, base)?;
        cameras.insert(cam.id.clone(), (cam.clone(), rx));
    }
    d.intake.cameras = receivers(&cameras);
    let started = Instant::now();
    let mut last_mtime = reload::mtime(pipeline_path);
    let mut last_reload_check = Instant::now();
    let mut last_links_check = Instant::now();
    let result = loop {
        if stop.load(Ordering::SeqCst) {
            tracing::info!("stopping on signal");
            break Ok(());
        }
        if opts.duration.is_some_and(|t| started.elapsed() >= t)
            || opts.max_frames.is_some_and(|n| d.summary.frames >= n)
        {
            break Ok(());
        }
        if opts.reload_check_s > 0.0
            && last_reload_check.elapsed().as_secs_f64() >= opts.reload_check_s
        {
            last_reload_check = Instant::now();
            let now = reload::mtime(pipeline_path);
            if now != last_mtime {
                last_mtime = now;
                // Errors and cameras that cannot start are logged where they arise.
                let _ = reload::reload(
                    d,
                    pipeline_path,
                    base,
                    &ingest,
                    &mut cameras,
                    opts.capture.as_ref(),
                );
                d.intake.cameras = receivers(&cameras);
            }
        }
        // Camera edits from the status API, through the same reload path.
        while let Some(edit) = d.status.as_ref().and_then(|b| b.next_mutation()) {
            let result = reload::apply_edit(
                d,
                pipeline_path,
                base,
                &ingest,
                &mut cameras,
                opts.capture.as_ref(),
                &edit,
            );
            d.intake.cameras = receivers(&cameras);
            // The file watcher must not apply the same edit a second time.
            last_mtime = reload::mtime(pipeline_path);
            let _ = edit.reply.send(result);
        }
        if let Err(e) = d.poll_background() {
            break Err(e);
        }
        // After the background work, so that the trainer's own saves are known first.
        if opts.reload_check_s > 0.0
            && last_links_check.elapsed().as_secs_f64() >= opts.reload_check_s
        {
            last_links_check = Instant::now();
            if let Err(e) = reload::check_links(d) {
                break Err(e);
            }
        }
        // In offline runs, wait for the initial training before taking the next frame, so
        // that the frames the links serve do not depend on how fast training ran.
        if opts.offline && d.training.is_some() {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        // Frames taken in while the models ran in turns come first: they are the oldest.
        let batch = if d.intake.is_empty() {
            next_batch(&cameras, Duration::from_millis(100), opts.batch.max(1))
        } else {
            d.intake.take(opts.batch.max(1))
        };
        if !batch.is_empty() {
            let prefetched = if batch.len() > 1 {
                d.run_batch(&batch)
            } else {
                vec![None]
            };
            if let Err(e) = serve_batch(d, batch, prefetched, opts, stop) {
                break Err(e);
            }
        } else {
            let all_done = d.intake.is_empty()
                && cameras.iter().all(|(id, (_, rx))| {
                    rx.is_empty() && ingest.state(id).is_none_or(|s| s.is_terminal())
                });
            if all_done && !cameras.is_empty() {
                tracing::info!("every camera has ended");
                break Ok(());
            }
        }
    };
    // Frames the hybrid's trigger kept for models run in turns are run before the end.
    let result = result.and_then(|()| d.flush_triggers());
    d.intake.discard();
    ingest.shutdown();
    result
}

/// Hands a batch's frames to the controller in order, each with what its batch run gave;
/// stops early at the frame limit or a signal (the rest of the batch is not served and is
/// counted as dropped).
fn serve_batch(
    d: &mut Driver,
    batch: Vec<Frame>,
    prefetched: Vec<Option<(crate::schedule::ModelSet, super::exec::FrameOutputs)>>,
    opts: &RunOptions,
    stop: &AtomicBool,
) -> Result<(), EngineError> {
    let mut frames = batch.into_iter().zip(prefetched);
    while let Some((frame, pre)) = frames.next() {
        if stop.load(Ordering::SeqCst) || opts.max_frames.is_some_and(|n| d.summary.frames >= n) {
            // Taken from live cameras and never served: counted as dropped (offline, the
            // rest of the files is not served either, and nothing counts as dropped).
            let rest = std::iter::once(frame).chain(frames.map(|(f, _)| f));
            for f in rest.filter(|_| !opts.offline) {
                super::backlog::count_dropped(&d.metrics, &f);
            }
            break;
        }
        // Offline, the initial training is waited for before the next frame (see run_loop).
        while opts.offline && d.training.is_some() {
            d.poll_background()?;
            if d.training.is_some() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        d.on_frame_with(frame, pre)?;
    }
    Ok(())
}

/// Clones of the cameras' receivers, for the intake that runs while the models run in turns.
fn receivers(cameras: &Cameras) -> Vec<Receiver<Frame>> {
    cameras.values().map(|(_, rx)| rx.clone()).collect()
}

/// Waits up to `timeout` for a frame from any camera, then takes the frames the cameras have
/// ready now, up to `max` in all, one camera after the other.
fn next_batch(cameras: &Cameras, timeout: Duration, max: usize) -> Vec<Frame> {
    let Some(first) = next_frame(cameras, timeout) else {
        return Vec::new();
    };
    let mut batch = vec![first];
    let mut more = true;
    while more && batch.len() < max {
        more = false;
        for (_, rx) in cameras.values() {
            if batch.len() >= max {
                break;
            }
            if let Ok(frame) = rx.try_recv() {
                batch.push(frame);
                more = true;
            }
        }
    }
    batch
}

/// Waits up to `timeout` for a frame from any camera.
fn next_frame(cameras: &Cameras, timeout: Duration) -> Option<Frame> {
    if cameras.is_empty() {
        std::thread::sleep(timeout);
        return None;
    }
    let receivers: Vec<&Receiver<Frame>> = cameras.values().map(|(_, rx)| rx).collect();
    let mut sel = Select::new();
    for rx in &receivers {
        sel.recv(rx);
    }
    let op = sel.select_timeout(timeout).ok()?;
    let i = op.index();
    op.recv(receivers[i]).ok()
}
