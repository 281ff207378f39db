//! Hot reload: an edited pipeline file is applied between two frames, or rejected by name.
//!
//! Applied: cameras added, removed or changed; the scheduler (budget, policy, period,
//! profiling ratio, drift margin) through the controller; sinks, rebuilt from the new
//! configuration (the old ones flushed first); the adaptation policy and threshold. Rejected
//! (the running configuration kept, the fields named in the log): models, links and the
//! aggregator, which need a restart.
//!
//! The link bundle file is watched too ([`check_links`]): a bundle written there by another
//! process (a `mlink train` run, an operator's copy) replaces the links being served; a file
//! that cannot be read, or holds links for other models, is rejected and the links held keep
//! serving.

use super::driver::Driver;
use super::sink::{self, SinkSet};
use crate::config::{self, CameraConfig, Pipeline};
use crate::control::{Event, Settings};
use crate::frame::Frame;
use crate::ingest::IngestManager;
use crate::schedule::Budget;
use crossbeam_channel::Receiver;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

pub(super) type Cameras = BTreeMap<String, (CameraConfig, Receiver<Frame>)>;

pub(super) fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// What tells one version of a file from the next: its modification time and length (an
/// atomic replacement within the clock's resolution still changes one of them, or the inode
/// rename updates the time).
pub(super) type FileStamp = (SystemTime, u64);

pub(super) fn stamp(p: &Path) -> Option<FileStamp> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Reads the link bundle again when its file changed since the engine last read or wrote it,
/// and serves it when it is readable and covers the pipeline's models; otherwise logs why,
/// counts it (`mlink_link_reloads_total{result="rejected"}`) and keeps the links it holds.
/// Nothing is watched before the first links exist (the initial training writes the file).
pub(super) fn check_links(d: &mut Driver) -> Result<(), super::EngineError> {
    if d.bundle.is_none() || d.training.is_some() {
        return Ok(());
    }
    let now = stamp(&d.links_path);
    if now == d.links_seen {
        return Ok(());
    }
    d.links_seen = now;
    let path = d.links_path.clone();
    let reject = |d: &Driver, why: String| {
        d.metrics
            .link_reloads
            .with_label_values(&["rejected"])
            .inc();
        tracing::error!(
            path = %path.display(),
            error = %why,
            "the link bundle changed on disk and is rejected; the links held keep serving"
        );
    };
    if now.is_none() {
        reject(d, "the file is gone".into());
        return Ok(());
    }
    let bundle = match crate::link::LinkBundle::load(&path) {
        Ok(b) => b,
        Err(e) => {
            reject(d, e.to_string());
            return Ok(());
        }
    };
    if let Err(e) = bundle.check_models(&d.models_with_specs()) {
        reject(d, e.to_string());
        return Ok(());
    }
    // The online trainer holds its own copy and would save it over the new file: it is
    // finished first, the new bundle written back (the trainer's last save may have replaced
    // it), and a trainer started on the new links.
    if let Some(t) = d.trainer.take() {
        t.finish();
        if let Err(e) = bundle.save(&path) {
            tracing::warn!(error = %e, path = %path.display(), "cannot write the reloaded links back");
        }
    }
    d.metrics
        .link_reloads
        .with_label_values(&["installed"])
        .inc();
    tracing::info!(path = %path.display(), "link bundle changed on disk; serving the new links");
    d.install_bundle(bundle, crate::control::Cause::Reload)
}

/// The parts of an edit that cannot apply without a restart, by field name.
pub(super) fn needs_restart(old: &Pipeline, new: &Pipeline) -> Vec<&'static str> {
    let mut fields = Vec::new();
    if new.models != old.models {
        fields.push("models");
    }
    if new.links != old.links {
        fields.push("links");
    }
    if new.adaptation.aggregator != old.adaptation.aggregator {
        fields.push("adaptation.aggregator");
    }
    fields
}

type Capture = std::sync::Arc<std::sync::Mutex<Vec<super::record::OutputRecord>>>;

/// Applies an edited pipeline file (see the module), or rejects it whole when it is invalid
/// or changes what needs a restart (the error says why). Applied, it returns the cameras that
/// could not start, with the reason.
pub(super) fn reload(
    d: &mut Driver,
    path: &Path,
    base: &Path,
    ingest: &IngestManager,
    cameras: &mut Cameras,
    capture: Option<&Capture>,
) -> Result<Vec<(String, String)>, String> {
    let new = match config::load_and_validate(path) {
        Ok(p) => p,
        Err(errors) => {
            for e in &errors {
                tracing::error!("rejected pipeline edit: {e}");
            }
            d.summary.reloads_rejected += 1;
            let all: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            return Err(format!("invalid pipeline: {}", all.join("; ")));
        }
    };
    let restart = needs_restart(&d.cfg, &new);
    if !restart.is_empty() {
        tracing::error!(
            fields = ?restart,
            "rejected pipeline edit: these fields apply only at a restart; the running \
             configuration is kept"
        );
        d.summary.reloads_rejected += 1;
        return Err(format!(
            "these fields apply only at a restart: {}",
            restart.join(", ")
        ));
    }
    let sinks = if new.sinks != d.cfg.sinks {
        let built = new
            .sinks
            .iter()
            .map(|s| sink::build(s, base, &d.metrics))
            .collect::<Result<Vec<_>, _>>();
        match built {
            Ok(mut s) => {
                if let Some(c) = capture {
                    s.push(Box::new(sink::MemorySink(c.clone())));
                }
                Some(s)
            }
            Err(e) => {
                tracing::error!(error = %e, "rejected pipeline edit: a sink cannot be built");
                d.summary.reloads_rejected += 1;
                return Err(format!("a sink cannot be built: {e}"));
            }
        }
    } else {
        None
    };
    let failed = apply_cameras(&d.cfg, &new, base, ingest, cameras);
    if let Some(s) = sinks {
        d.sinks.flush();
        d.sinks = SinkSet::new(s, d.metrics.clone());
        tracing::info!("sinks rebuilt");
    }
    let budget = Budget::from(&new.scheduler.budget);
    d.pool.set_budget_mb(budget.memory_mb);
    d.cfg = new;
    d.start_trainer(crate::control::Batch::default());
    let event = Event::ConfigChanged {
        settings: Box::new(Settings::from_pipeline(&d.cfg)),
        budget,
        costs: d.ctl.costs().clone(),
    };
    if let Err(e) = d.send(event, None).and_then(|()| d.update_offered_rate()) {
        tracing::error!(error = %e, "re-selection after the edit failed");
    }
    d.summary.reloads_applied += 1;
    if let Some(board) = &d.status {
        board.cameras_configured(&d.cfg.cameras);
    }
    tracing::info!("pipeline file reloaded");
    Ok(failed)
}

/// Applies a camera edit from the API through the hot-reload path: the validated text is
/// written to the pipeline file atomically and reloaded. A rejected reload, or an added camera
/// that cannot start, puts the previous file back (and reloads it), so a refused edit changes
/// neither the file nor the running cameras.
pub(super) fn apply_edit(
    d: &mut Driver,
    path: &Path,
    base: &Path,
    ingest: &IngestManager,
    cameras: &mut Cameras,
    capture: Option<&Capture>,
    edit: &crate::status::Mutation,
) -> Result<(), String> {
    let old = std::fs::read(path)
        .map_err(|e| format!("cannot read the pipeline file {}: {e}", path.display()))?;
    crate::fsutil::write_atomic(path, edit.text.as_bytes())
        .map_err(|e| format!("cannot write the pipeline file {}: {e}", path.display()))?;
    let failure = match reload(d, path, base, ingest, cameras, capture) {
        Err(e) => Some(e),
        Ok(failed) => match &edit.expect_camera {
            Some(id) if !cameras.contains_key(id) => {
                Some(failed.iter().find(|(c, _)| c == id).map_or_else(
                    || format!("camera `{id}` did not start"),
                    |(_, e)| format!("camera `{id}` cannot start: {e}"),
                ))
            }
            _ => None,
        },
    };
    let Some(failure) = failure else {
        return Ok(());
    };
    if let Err(e) = crate::fsutil::write_atomic(path, &old) {
        tracing::error!(error = %e, "cannot put the previous pipeline file back");
    } else if let Err(e) = reload(d, path, base, ingest, cameras, capture) {
        tracing::error!(error = %e, "the previous pipeline file no longer applies");
    }
    Err(failure)
}

/// Stops the cameras removed or changed and starts the added or changed ones; returns those
/// that could not start, with the reason.
fn apply_cameras(
    old: &Pipeline,
    new: &Pipeline,
    base: &Path,
    ingest: &IngestManager,
    cameras: &mut Cameras,
) -> Vec<(String, String)> {
    let mut failed = Vec::new();
    let old: BTreeMap<&str, &CameraConfig> =
        old.cameras.iter().map(|c| (c.id.as_str(), c)).collect();
    let wanted: BTreeMap<&str, &CameraConfig> =
        new.cameras.iter().map(|c| (c.id.as_str(), c)).collect();
    for (id, cam) in &old {
        if wanted.get(id) != Some(cam) {
            if let Err(e) = ingest.remove_camera(id) {
                tracing::warn!(camera = %id, error = %e, "cannot remove camera");
            }
            cameras.remove(*id);
            tracing::info!(camera = %id, "camera removed");
        }
    }
    for (id, cam) in &wanted {
        if old.get(id) != Some(cam) {
            match ingest.add_camera(cam, base) {
                Ok(rx) => {
                    cameras.insert(id.to_string(), ((*cam).clone(), rx));
                    tracing::info!(camera = %id, "camera added");
                }
                Err(e) => {
                    tracing::error!(camera = %id, error = %e, "cannot add camera");
                    failed.push((id.to_string(), e.to_string()));
                }
            }
        }
    }
    failed
}
