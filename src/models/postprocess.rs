//! Shared post-processing: detections in frame coordinates, IoU, non-maximum suppression,
//! softmax and sigmoid.

use serde::{Deserialize, Serialize};

/// One keypoint of a pose, in frame pixels.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Keypoint {
    pub x: f32,
    pub y: f32,
    pub score: f32,
}

/// One detected object: box corners in frame pixels, class id in the model's vocabulary, score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub class: u32,
    pub score: f32,
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
    /// MoveNet's 17 keypoints (COCO order); empty for other families.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keypoints: Vec<Keypoint>,
}

impl Detection {
    pub fn area(&self) -> f32 {
        (self.x2 - self.x1).max(0.0) * (self.y2 - self.y1).max(0.0)
    }

    pub fn centre(&self) -> (f32, f32) {
        ((self.x1 + self.x2) / 2.0, (self.y1 + self.y2) / 2.0)
    }

    /// Clamps the box to a `width` x `height` frame.
    pub fn clamp_to(&mut self, width: u32, height: u32) {
        let (w, h) = (width as f32, height as f32);
        self.x1 = self.x1.clamp(0.0, w);
        self.x2 = self.x2.clamp(0.0, w);
        self.y1 = self.y1.clamp(0.0, h);
        self.y2 = self.y2.clamp(0.0, h);
    }
}

/// Intersection over union of two boxes.
pub fn iou(a: &Detection, b: &Detection) -> f32 {
    let iw = (a.x2.min(b.x2) - a.x1.max(b.x1)).max(0.0);
    let ih = (a.y2.min(b.y2) - a.y1.max(b.y1)).max(0.0);
    let inter = iw * ih;
    let union = a.area() + b.area() - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

/// Greedy non-maximum suppression per class: keeps the best-scoring box and drops boxes of the
/// same class overlapping it by more than `threshold`. The result is sorted by score.
pub fn nms(mut dets: Vec<Detection>, threshold: f32) -> Vec<Detection> {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detection> = Vec::with_capacity(dets.len());
    for d in dets {
        if kept
            .iter()
            .all(|k| k.class != d.class || iou(k, &d) <= threshold)
        {
            kept.push(d);
        }
    }
    kept
}

/// Softmax of `logits` (numerically stable).
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&v| (v - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Index of the largest value (the first one on ties); `None` for an empty slice.
pub fn argmax(v: &[f32]) -> Option<usize> {
    v.iter()
        .enumerate()
        .fold(None, |best: Option<(usize, f32)>, (i, &x)| match best {
            Some((_, b)) if b >= x => best,
            _ => Some((i, x)),
        })
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(class: u32, score: f32, x1: f32, y1: f32, x2: f32, y2: f32) -> Detection {
        Detection {
            class,
            score,
            x1,
            y1,
            x2,
            y2,
            keypoints: vec![],
        }
    }

    #[test]
    fn nms_suppresses_overlaps_of_the_same_class_only() {
        let dets = vec![
            d(0, 0.5, 0.0, 0.0, 10.0, 10.0),
            d(0, 0.9, 1.0, 1.0, 11.0, 11.0),
            d(1, 0.8, 1.0, 1.0, 11.0, 11.0),
            d(0, 0.7, 50.0, 50.0, 60.0, 60.0),
        ];
        let kept = nms(dets, 0.5);
        let scores: Vec<f32> = kept.iter().map(|k| k.score).collect();
        assert_eq!(scores, vec![0.9, 0.8, 0.7]);
    }

    #[test]
    fn softmax_sums_to_one_and_argmax_picks_first_max() {
        let p = softmax(&[1.0, 3.0, 3.0, -1000.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(argmax(&p), Some(1));
        assert_eq!(argmax(&[]), None);
        assert!(
            (iou(
                &d(0, 1.0, 0.0, 0.0, 2.0, 2.0),
                &d(0, 1.0, 1.0, 0.0, 3.0, 2.0)
            ) - 1.0 / 3.0)
                .abs()
                < 1e-6
        );
    }
}
