//! Hot reload: an edited pipeline file is applied between two frames, or rejected by name.
//!
//! Applied: cameras added, removed or changed; the scheduler (budget, policy, period,
//! profiling ratio, drift margin) through the controller; sinks, rebuilt from the new
//! configuration (the old ones flushed first); the adaptation policy and threshold. Rejected
//! (the running configuration kept, the fields named in the log): models, links and the
//! aggregator, which need a restart.

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

/// Applies an edited pipeline file (see the module), or rejects it whole when it is invalid
/// or changes what needs a restart.
pub(super) fn reload(
    d: &mut Driver,
    path: &Path,
    base: &Path,
    ingest: &IngestManager,
    cameras: &mut Cameras,
    capture: Option<&std::sync::Arc<std::sync::Mutex<Vec<super::record::OutputRecord>>>>,
) {
    let new = match config::load_and_validate(path) {
        Ok(p) => p,
        Err(errors) => {
            for e in &errors {
                tracing::error!("rejected pipeline edit: {e}");
            }
            d.summary.reloads_rejected += 1;
            return;
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
        return;
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
                return;
            }
        }
    } else {
        None
    };
    apply_cameras(&d.cfg, &new, base, ingest, cameras);
    if let Some(s) = sinks {
        d.sinks.flush();
        d.sinks = SinkSet::new(s, d.metrics.clone());
        tracing::info!("sinks rebuilt");
    }
    let budget = Budget::from(&new.scheduler.budget);
    d.pool.set_budget_mb(budget.memory_mb);
    d.cfg = new;
    d.start_trainer();
    let event = Event::ConfigChanged {
        settings: Settings::from_pipeline(&d.cfg),
        budget,
        costs: d.ctl.costs().clone(),
    };
    if let Err(e) = d.send(event, None).and_then(|()| d.update_offered_rate()) {
        tracing::error!(error = %e, "re-selection after the edit failed");
    }
    d.summary.reloads_applied += 1;
    tracing::info!("pipeline file reloaded");
}

fn apply_cameras(
    old: &Pipeline,
    new: &Pipeline,
    base: &Path,
    ingest: &IngestManager,
    cameras: &mut Cameras,
) {
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
                Err(e) => tracing::error!(camera = %id, error = %e, "cannot add camera"),
            }
        }
    }
}
