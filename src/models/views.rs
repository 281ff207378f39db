//! Link views: a fixed-length encoding of a model's raw black-box output, more of it than the
//! head, that links take as input (the paper feeds links the detector's boxes, Table I).
//!
//! | family | view (in this order) |
//! |---|---|
//! | detectors (`centernet`, `nanodet`, `blazeface`) | per class, the count of detections at each score threshold (COCO detectors: then the count of every other class); the histogram of detection scores between the lowest threshold and 1; a `grid` x `grid` occupancy of box centres; a histogram of box sizes |
//! | `movenet_multipose` | as a detector (the one class `person`), then the 17 keypoint confidences summed over the people found |
//! | classifiers (`efficientnet_lite`, `face_attribute`) | the class probabilities (mean over crops, uniform without any); with `class_indices`, only those classes' probabilities, then the summed probability of the others |
//!
//! The occupancy grid and the box sizes count the detections of the view's classes at the
//! model's `min_score` (the detections its head sees). Box size: the square root of the box's
//! share of the frame area, in bins on a halving scale (the last bin ends at 1, each earlier
//! bin at half the next one's end; the first starts at 0). Scores are histogrammed in equal
//! bins. Every entry is named (`count.person@0.3`, `score[2]`, `grid[1,0]`, `size[0]`,
//! `keypoint[5]`, `p[17]`, `p.rest`) so that a trace says what its views hold.

use super::ModelError;
use super::adapters::{AdapterOutput, vocabulary};
use super::classes::ClassVocabulary;
use super::postprocess::Detection;
use crate::config::{
    AdapterKind, DEFAULT_VIEW_GRID, DEFAULT_VIEW_SCORE_BINS, DEFAULT_VIEW_SIZE_BINS,
    DEFAULT_VIEW_THRESHOLDS, HeadConfig, ViewConfig,
};

/// MoveNet's keypoints per person.
const KEYPOINTS: usize = 17;

/// A view bound to its model: classes resolved, layout fixed.
#[derive(Clone, Debug)]
pub struct View {
    layout: Layout,
    names: Vec<String>,
}

#[derive(Clone, Debug)]
enum Layout {
    Detector {
        /// Class ids per counted class (the last may be "every other class").
        classes: Vec<Vec<u32>>,
        thresholds: Vec<f32>,
        score_bins: usize,
        grid: usize,
        size_bins: usize,
        keypoints: bool,
    },
    Classifier {
        classes: usize,
        /// Kept class indices; empty: all.
        kept: Vec<usize>,
    },
}

impl View {
    /// Binds a model's view configuration (or its family's default, `cfg` None) to the
    /// model's family and head. `num_classes` is a classifier's class count.
    pub fn new(
        model: &str,
        adapter: AdapterKind,
        cfg: Option<&ViewConfig>,
        head: &HeadConfig,
        num_classes: Option<usize>,
    ) -> Result<Self, ModelError> {
        let default = ViewConfig::default();
        let cfg = cfg.unwrap_or(&default);
        let err = |message: String| ModelError::Config {
            model: model.to_string(),
            message: format!("view: {message}"),
        };
        if let Some((field, message)) = cfg.check(adapter).into_iter().next() {
            return Err(err(format!("{field}: {message}")));
        }
        let mut names = Vec::new();
        let layout = match (vocabulary(adapter), num_classes) {
            (Some(vocab), _) => {
                let class_names: Vec<String> = match &cfg.classes {
                    Some(c) => c.clone(),
                    None => default_classes(vocab, head),
                };
                let mut classes = Vec::with_capacity(class_names.len() + 1);
                for c in &class_names {
                    classes.push(vocab.resolve(c).map_err(&err)?);
                }
                let mut labels = class_names.clone();
                if vocab == ClassVocabulary::Coco && cfg.classes.is_none() {
                    let listed: Vec<u32> = classes.concat();
                    let rest: Vec<u32> = (0..crate::config::COCO_CLASSES.len() as u32)
                        .filter(|c| !listed.contains(c))
                        .collect();
                    if !rest.is_empty() {
                        classes.push(rest);
                        labels.push("other".into());
                    }
                }
                let thresholds = cfg
                    .thresholds
                    .clone()
                    .unwrap_or_else(|| DEFAULT_VIEW_THRESHOLDS.to_vec());
                for l in &labels {
                    for t in &thresholds {
                        names.push(format!("count.{l}@{t}"));
                    }
                }
                let score_bins = cfg.score_bins.unwrap_or(DEFAULT_VIEW_SCORE_BINS);
                names.extend((0..score_bins).map(|b| format!("score[{b}]")));
                let grid = cfg.grid.unwrap_or(DEFAULT_VIEW_GRID);
                for r in 0..grid {
                    names.extend((0..grid).map(|c| format!("grid[{r},{c}]")));
                }
                let size_bins = cfg.size_bins.unwrap_or(DEFAULT_VIEW_SIZE_BINS);
                names.extend((0..size_bins).map(|b| format!("size[{b}]")));
                let keypoints =
                    adapter == AdapterKind::MovenetMultipose && cfg.keypoints.unwrap_or(true);
                if keypoints {
                    names.extend((0..KEYPOINTS).map(|k| format!("keypoint[{k}]")));
                }
                Layout::Detector {
                    classes,
                    thresholds,
                    score_bins,
                    grid,
                    size_bins,
                    keypoints,
                }
            }
            (None, Some(n)) => {
                let kept = cfg.class_indices.clone().unwrap_or_default();
                if let Some(bad) = kept.iter().find(|&&c| c >= n) {
                    return Err(err(format!(
                        "class_indices: class {bad} does not exist (the model has classes 0 to {})",
                        n.saturating_sub(1)
                    )));
                }
                if kept.is_empty() {
                    names.extend((0..n).map(|c| format!("p[{c}]")));
                } else {
                    names.extend(kept.iter().map(|c| format!("p[{c}]")));
                    names.push("p.rest".into());
                }
                Layout::Classifier { classes: n, kept }
            }
            (None, None) => {
                return Err(err(format!(
                    "{adapter:?} has neither a class vocabulary nor a class count"
                )));
            }
        };
        Ok(Self { layout, names })
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The name of every entry, in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The lowest detection score the view needs decoded (its lowest threshold), None for
    /// classifiers.
    pub fn min_score(&self) -> Option<f32> {
        match &self.layout {
            Layout::Detector { thresholds, .. } => thresholds.first().copied(),
            Layout::Classifier { .. } => None,
        }
    }

    /// The view of one run on a `width` x `height` frame. `out` holds the detections down to
    /// [`min_score`](Self::min_score) (or the model's, if lower); `head_min_score` is the
    /// model's own `min_score`, the threshold of the grid and sizes.
    pub fn apply(
        &self,
        out: &AdapterOutput,
        width: u32,
        height: u32,
        head_min_score: f32,
    ) -> Vec<f32> {
        let mut v = Vec::with_capacity(self.names.len());
        match (&self.layout, out) {
            (
                Layout::Detector {
                    classes,
                    thresholds,
                    score_bins,
                    grid,
                    size_bins,
                    keypoints,
                },
                AdapterOutput::Detections(dets),
            ) => {
                let in_view = |d: &Detection| classes.iter().any(|ids| ids.contains(&d.class));
                for ids in classes {
                    for &t in thresholds {
                        let n = dets
                            .iter()
                            .filter(|d| ids.contains(&d.class) && d.score >= t)
                            .count();
                        v.push(n as f32);
                    }
                }
                let lo = thresholds.first().copied().unwrap_or(0.0);
                let mut hist = vec![0.0; *score_bins];
                if *score_bins > 0 {
                    for d in dets.iter().filter(|d| in_view(d) && d.score >= lo) {
                        let x =
                            ((d.score - lo) / (1.0 - lo).max(1e-6) * *score_bins as f32) as usize;
                        hist[x.min(score_bins - 1)] += 1.0;
                    }
                }
                v.extend(hist);
                let kept: Vec<&Detection> = dets
                    .iter()
                    .filter(|d| in_view(d) && d.score >= head_min_score)
                    .collect();
                let mut cells = vec![0.0; grid * grid];
                let (w, h) = (width.max(1) as f32, height.max(1) as f32);
                if *grid > 0 {
                    for d in &kept {
                        let (cx, cy) = d.centre();
                        let c = ((cx / w * *grid as f32) as usize).min(grid - 1);
                        let r = ((cy / h * *grid as f32) as usize).min(grid - 1);
                        cells[r * grid + c] += 1.0;
                    }
                }
                v.extend(cells);
                let mut sizes = vec![0.0; *size_bins];
                if *size_bins > 0 {
                    for d in &kept {
                        let s = (d.area() / (w * h)).sqrt();
                        // Bin b ends at 2^(b - size_bins + 1): halving from the top.
                        let mut b = *size_bins - 1;
                        while b > 0 && s < 0.5f32.powi((*size_bins - b) as i32) {
                            b -= 1;
                        }
                        sizes[b] += 1.0;
                    }
                }
                v.extend(sizes);
                if *keypoints {
                    let mut k = vec![0.0; KEYPOINTS];
                    for d in dets.iter().filter(|d| d.score >= lo) {
                        for (acc, p) in k.iter_mut().zip(&d.keypoints) {
                            *acc += p.score;
                        }
                    }
                    v.extend(k);
                }
            }
            (Layout::Classifier { classes, kept }, _) => {
                let probs = match out {
                    AdapterOutput::Classes { probs, .. } if !probs.is_empty() => {
                        let mut acc = vec![0.0f32; *classes];
                        for row in probs {
                            for (a, p) in acc.iter_mut().zip(row) {
                                *a += p;
                            }
                        }
                        let n = probs.len() as f32;
                        acc.into_iter().map(|a| a / n).collect()
                    }
                    _ => vec![1.0 / *classes as f32; *classes],
                };
                if kept.is_empty() {
                    v.extend(probs);
                } else {
                    let mut rest = 1.0f32;
                    for &c in kept {
                        let p = probs.get(c).copied().unwrap_or(0.0);
                        v.push(p);
                        rest -= p;
                    }
                    v.push(rest.max(0.0));
                }
            }
            (Layout::Detector { .. }, AdapterOutput::Classes { .. }) => {
                // A detector always decodes detections; keep the length fixed regardless.
                v.resize(self.names.len(), 0.0);
            }
        }
        debug_assert_eq!(v.len(), self.names.len());
        v
    }
}

/// A detector view's default classes: `person`, `vehicle` and the head's classes (COCO), or
/// the one class of a one-class detector.
fn default_classes(vocab: ClassVocabulary, head: &HeadConfig) -> Vec<String> {
    match vocab {
        ClassVocabulary::Coco => {
            let mut c: Vec<String> = vec!["person".into(), "vehicle".into()];
            for h in head.classes() {
                if !c.contains(h) {
                    c.push(h.clone());
                }
            }
            c
        }
        ClassVocabulary::Person => vec!["person".into()],
        ClassVocabulary::Face => vec!["face".into()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::postprocess::Keypoint;

    fn det(class: u32, score: f32, x1: f32, y1: f32, x2: f32, y2: f32) -> Detection {
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

    fn count(classes: &[&str]) -> HeadConfig {
        HeadConfig::Count {
            classes: classes.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn detector_view_counts_thresholds_histograms_grid_and_sizes() {
        let cfg = ViewConfig {
            classes: Some(vec!["person".into(), "vehicle".into()]),
            thresholds: Some(vec![0.2, 0.5]),
            score_bins: Some(2),
            grid: Some(2),
            size_bins: Some(2),
            ..ViewConfig::default()
        };
        let v = View::new(
            "m",
            AdapterKind::Centernet,
            Some(&cfg),
            &count(&["person"]),
            None,
        )
        .unwrap();
        assert_eq!(v.len(), 2 * 2 + 2 + 4 + 2);
        assert_eq!(v.min_score(), Some(0.2));
        let out = AdapterOutput::Detections(vec![
            // A large person top left (size share sqrt(2500/10000) = 0.5: the upper bin).
            det(0, 0.9, 0.0, 0.0, 50.0, 50.0),
            // A weak person bottom right: counted at 0.2 only, below the head's 0.3.
            det(0, 0.25, 90.0, 90.0, 100.0, 100.0),
            // A small car bottom right (share 0.1: the lower bin).
            det(2, 0.6, 80.0, 80.0, 90.0, 90.0),
            // A dog: not a view class, counted nowhere.
            det(16, 0.9, 0.0, 0.0, 10.0, 10.0),
        ]);
        let x = v.apply(&out, 100, 100, 0.3);
        assert_eq!(
            x,
            vec![
                2.0, 1.0, // person @0.2, @0.5
                1.0, 1.0, // vehicle @0.2, @0.5
                1.0, 2.0, // scores [0.2, 0.6), [0.6, 1]
                1.0, 0.0, 0.0, 1.0, // grid at min_score 0.3
                1.0, 1.0, // sizes
            ],
            "{:?}",
            v.names()
        );
        assert_eq!(v.names()[0], "count.person@0.2");
    }

    #[test]
    fn default_views_have_the_family_layout() {
        let v = View::new("m", AdapterKind::Nanodet, None, &count(&["dog"]), None).unwrap();
        // person, vehicle, dog, other: 4 x 5 thresholds, 9 score bins, 3x3 grid, 4 sizes.
        assert_eq!(v.len(), 4 * 5 + 9 + 9 + 4);
        assert_eq!(v.names()[15], "count.other@0.1");
        let pose = View::new("p", AdapterKind::MovenetMultipose, None, &count(&[]), None).unwrap();
        assert_eq!(pose.len(), 5 + 9 + 9 + 4 + 17);
        let mut person = det(0, 0.8, 0.0, 0.0, 10.0, 10.0);
        person.keypoints = (0..17)
            .map(|k| Keypoint {
                x: 0.0,
                y: 0.0,
                score: k as f32 / 17.0,
            })
            .collect();
        let x = pose.apply(&AdapterOutput::Detections(vec![person]), 100, 100, 0.3);
        assert_eq!(x.len(), pose.len());
        assert!((x[pose.len() - 1] - 16.0 / 17.0).abs() < 1e-6);
    }

    #[test]
    fn classifier_view_keeps_listed_classes_and_the_rest() {
        let all = View::new(
            "c",
            AdapterKind::FaceAttribute,
            None,
            &HeadConfig::Label { groups: vec![] },
            Some(3),
        )
        .unwrap();
        let out = AdapterOutput::Classes {
            probs: vec![vec![0.2, 0.3, 0.5], vec![0.4, 0.1, 0.5]],
            features: vec![],
        };
        let x = all.apply(&out, 1, 1, 0.3);
        assert!((x[0] - 0.3).abs() < 1e-6 && (x[2] - 0.5).abs() < 1e-6);
        let none = AdapterOutput::Classes {
            probs: vec![],
            features: vec![],
        };
        assert_eq!(all.apply(&none, 1, 1, 0.3), vec![1.0 / 3.0; 3]);
        let cfg = ViewConfig {
            class_indices: Some(vec![2]),
            ..ViewConfig::default()
        };
        let compact = View::new(
            "c",
            AdapterKind::FaceAttribute,
            Some(&cfg),
            &HeadConfig::Label { groups: vec![] },
            Some(3),
        )
        .unwrap();
        let x = compact.apply(&out, 1, 1, 0.3);
        assert_eq!(compact.names(), ["p[2]", "p.rest"]);
        assert!((x[0] - 0.5).abs() < 1e-6 && (x[1] - 0.5).abs() < 1e-6);
    }

    #[test]
    fn views_that_do_not_fit_the_family_are_refused() {
        let bad = ViewConfig {
            class_indices: Some(vec![1]),
            ..ViewConfig::default()
        };
        let e = View::new(
            "m",
            AdapterKind::Centernet,
            Some(&bad),
            &count(&["person"]),
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("class_indices"), "{e}");
        let bad = ViewConfig {
            grid: Some(3),
            ..ViewConfig::default()
        };
        assert!(
            View::new(
                "c",
                AdapterKind::EfficientnetLite,
                Some(&bad),
                &HeadConfig::Label { groups: vec![] },
                Some(1000)
            )
            .is_err()
        );
        let bad = ViewConfig {
            class_indices: Some(vec![5]),
            ..ViewConfig::default()
        };
        assert!(
            View::new(
                "c",
                AdapterKind::FaceAttribute,
                Some(&bad),
                &HeadConfig::Label { groups: vec![] },
                Some(2)
            )
            .is_err()
        );
        let bad = ViewConfig {
            thresholds: Some(vec![0.5, 0.2]),
            ..ViewConfig::default()
        };
        assert!(
            View::new(
                "m",
                AdapterKind::Nanodet,
                Some(&bad),
                &count(&["person"]),
                None
            )
            .is_err()
        );
    }
}
