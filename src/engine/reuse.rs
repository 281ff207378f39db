//! The newest exact output of every model on every camera, which the hybrid policy serves
//! for a triggered model between the frames its trigger selects (`Between::Reuse`), as
//! `mlink eval` scores it.
//!
//! Outputs of a model run in turns arrive after later frames were served; an output only
//! replaces an older one (by the frame's sequence number), so a late label never hides a
//! newer exact output.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::frame::Frame;
use crate::output::OutputValue;

/// One model's newest exact output on a camera.
#[derive(Clone, Debug, PartialEq)]
pub struct LastExact {
    /// Sequence number of the frame it was computed on.
    pub seq: u64,
    /// That frame's presentation time (seconds), when known.
    pub pts_s: Option<f64>,
    pub value: OutputValue,
}

/// Per camera and model, the newest exact output.
#[derive(Debug, Default)]
pub struct LastOutputs {
    by_camera: BTreeMap<Arc<str>, Vec<Option<LastExact>>>,
}

impl LastOutputs {
    /// Notes the exact outputs a frame got (`values[m]`, None where the model did not run).
    pub fn note(&mut self, frame: &Frame, values: &[Option<OutputValue>]) {
        let slots = self.by_camera.entry(frame.camera.clone()).or_default();
        if slots.len() < values.len() {
            slots.resize(values.len(), None);
        }
        for (slot, value) in slots.iter_mut().zip(values) {
            let Some(value) = value else { continue };
            if slot.as_ref().is_some_and(|l| l.seq > frame.seq) {
                continue;
            }
            *slot = Some(LastExact {
                seq: frame.seq,
                pts_s: frame.pts_ns.map(|p| p as f64 / 1e9),
                value: value.clone(),
            });
        }
    }

    /// Model `m`'s newest exact output on `frame`'s camera from an earlier frame.
    pub fn before(&self, frame: &Frame, m: usize) -> Option<&LastExact> {
        self.by_camera
            .get(&frame.camera)?
            .get(m)?
            .as_ref()
            .filter(|l| l.seq < frame.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(camera: &str, seq: u64) -> Frame {
        Frame::new(
            camera.into(),
            seq,
            Some(seq * 500_000_000),
            1,
            1,
            vec![0u8; 3].into(),
        )
        .expect("a 1x1 frame")
    }

    fn v(x: f32) -> Option<OutputValue> {
        Some(OutputValue::Vector(vec![x]))
    }

    #[test]
    fn the_newest_earlier_output_of_the_same_camera_is_served() {
        let mut last = LastOutputs::default();
        last.note(&frame("a", 1), &[v(1.0), None]);
        last.note(&frame("b", 2), &[v(7.0), v(8.0)]);
        let now = frame("a", 3);
        let got = last.before(&now, 0).expect("model 0 ran on camera a");
        assert_eq!(
            (got.seq, got.value.clone()),
            (1, OutputValue::Vector(vec![1.0]))
        );
        assert_eq!(got.pts_s, Some(0.5));
        // Model 1 ran on camera b only.
        assert!(last.before(&now, 1).is_none());
        // An output of the frame itself, or of a later one, is not "before" it.
        assert!(last.before(&frame("a", 1), 0).is_none());
    }

    #[test]
    fn a_late_output_of_an_older_frame_does_not_replace_a_newer_one() {
        let mut last = LastOutputs::default();
        last.note(&frame("a", 5), &[v(5.0)]);
        // A run in turns labels frame 3 after frame 5 was served.
        last.note(&frame("a", 3), &[v(3.0)]);
        assert_eq!(last.before(&frame("a", 6), 0).map(|l| l.seq), Some(5));
        last.note(&frame("a", 6), &[v(6.0)]);
        assert_eq!(last.before(&frame("a", 7), 0).map(|l| l.seq), Some(6));
    }
}
