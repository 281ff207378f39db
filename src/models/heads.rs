//! Output heads: what the application consumes from a model and what the links map between.
//!
//! | head | form | task | value |
//! |---|---|---|---|
//! | `count` | vector of 1 | Count | detections of the listed classes |
//! | `class_counts` | vector, one per listed class | Count | detections per class |
//! | `occupancy` | vector of rows x cols | Count | box centres per grid cell, row-major |
//! | `probs` | vector of the classes | SingleLabel | class probabilities |
//! | `features` | vector of 1280 | Regression | pooled EfficientNet-Lite0 features |
//! | `boxes` | token sequence | Sequence | 4 tokens per box, then the end token |
//! | `label` | vector of the classes | SingleLabel | one-hot top class |
//!
//! `probs` and `label` with `groups`: the class probabilities summed per group (the classes no
//! group lists form a last group, `other`, unless every class is listed); `label` is then the
//! one-hot top group.
//!
//! Occupancy is a Count task: each cell holds a number of objects, so the count metric
//! (|predicted - exact| < 0.5 per cell) and a linear output fit it.
//!
//! `boxes`: the `max_boxes` highest-scoring boxes of the listed classes, ordered left to right
//! (then top to bottom), each as `x1 y1 x2 y2` quantised to `0..grid` on the frame's width and
//! height; the end token is `grid`, so the vocabulary is `grid + 1` and the longest sequence
//! `4 * max_boxes + 1` tokens.
//!
//! Secondary models (run on crops): `probs` is the mean over the crops, `label` the one-hot of
//! that mean's top class, `features` the mean feature vector. With no crops (no faces in the
//! frame) `probs` and `label` are uniform over the classes (no evidence either way) and
//! `features` is all zeros.

use super::ModelError;
use super::adapters::{AdapterOutput, vocabulary};
use super::classes::ClassVocabulary;
use super::onnx_info::read_signature;
use super::postprocess::{Detection, argmax};
use super::views::View;
use crate::config::{
    AdapterKind, ClassGroup, HeadConfig, ModelConfig, OTHER_GROUP, check_class_groups,
};
use crate::output::{OutputSpec, OutputValue, TaskKind};
use std::path::Path;

/// Length of EfficientNet-Lite0's feature vector.
pub const FEATURES_LEN: usize = 1280;
pub use crate::config::IMAGENET_CLASSES;

/// A head bound to its model: class ids resolved, output spec fixed.
#[derive(Clone, Debug)]
pub struct Head {
    kind: HeadKind,
    spec: OutputSpec,
}

#[derive(Clone, Debug)]
enum HeadKind {
    Count(Vec<u32>),
    ClassCounts(Vec<Vec<u32>>),
    Occupancy {
        ids: Vec<u32>,
        rows: usize,
        cols: usize,
    },
    Probs(Classes),
    Features,
    Boxes {
        ids: Vec<u32>,
        grid: usize,
        max_boxes: usize,
    },
    Label(Classes),
}

/// A classifier head's classes: the model's class count and, when the head groups them, the
/// group of every class.
#[derive(Clone, Debug)]
struct Classes {
    n: usize,
    /// `group_of[class]`: the group index (len `n`); empty without grouping.
    group_of: Vec<usize>,
    /// Group names, `other` last when present.
    names: Vec<String>,
}

impl Classes {
    fn new(n: usize, groups: &[ClassGroup]) -> Result<Self, String> {
        if groups.is_empty() {
            return Ok(Self {
                n,
                group_of: vec![],
                names: vec![],
            });
        }
        check_class_groups(groups, n)?;
        let mut group_of = vec![usize::MAX; n];
        let mut names = Vec::with_capacity(groups.len() + 1);
        for (g, group) in groups.iter().enumerate() {
            for &c in &group.classes {
                group_of[c] = g;
            }
            names.push(group.name.clone());
        }
        if group_of.contains(&usize::MAX) {
            let other = names.len();
            for g in &mut group_of {
                if *g == usize::MAX {
                    *g = other;
                }
            }
            names.push(OTHER_GROUP.to_string());
        }
        Ok(Self { n, group_of, names })
    }

    /// Length of the head's vector: the groups, or the classes.
    fn len(&self) -> usize {
        if self.names.is_empty() {
            self.n
        } else {
            self.names.len()
        }
    }

    /// Class probabilities summed per group (unchanged without grouping).
    fn fold(&self, probs: Vec<f32>) -> Vec<f32> {
        if self.names.is_empty() {
            return probs;
        }
        let mut out = vec![0.0; self.names.len()];
        for (p, &g) in probs.iter().zip(&self.group_of) {
            out[g] += p;
        }
        out
    }
}

fn head_name(h: &HeadConfig) -> &'static str {
    match h {
        HeadConfig::Count { .. } => "count",
        HeadConfig::ClassCounts { .. } => "class_counts",
        HeadConfig::Occupancy { .. } => "occupancy",
        HeadConfig::Probs { .. } => "probs",
        HeadConfig::Features => "features",
        HeadConfig::Boxes { .. } => "boxes",
        HeadConfig::Label { .. } => "label",
    }
}

impl Head {
    /// Binds a head to a model family. `num_classes` is the classifier's class count (`None`
    /// for detectors).
    pub fn new(
        model: &str,
        adapter: AdapterKind,
        cfg: &HeadConfig,
        num_classes: Option<usize>,
    ) -> Result<Self, ModelError> {
        let name = head_name(cfg);
        let err = |message: String| ModelError::Head {
            model: model.to_string(),
            head: name,
            message,
        };
        let vocab = vocabulary(adapter);
        let detector = |what: &str| -> Result<ClassVocabulary, ModelError> {
            vocab.ok_or_else(|| err(format!("{what} needs a detector (centernet, nanodet, movenet_multipose, blazeface), not {adapter:?}")))
        };
        let resolve =
            |v: ClassVocabulary, classes: &[String]| -> Result<Vec<Vec<u32>>, ModelError> {
                if classes.is_empty() {
                    // A one-class detector's head may leave `classes` out (docs/pipeline.md):
                    // it counts that class, as validation accepts.
                    return match v {
                        ClassVocabulary::Person => Ok(vec![v.resolve("person").map_err(&err)?]),
                        ClassVocabulary::Face => Ok(vec![v.resolve("face").map_err(&err)?]),
                        ClassVocabulary::Coco => Err(err("`classes` is empty".into())),
                    };
                }
                classes.iter().map(|c| v.resolve(c).map_err(&err)).collect()
            };
        let classifier = |what: &str| -> Result<usize, ModelError> {
            num_classes.ok_or_else(|| {
                err(format!(
                    "{what} needs a classifier (efficientnet_lite, face_attribute), not {adapter:?}"
                ))
            })
        };
        let kind = match cfg {
            HeadConfig::Count { classes } => {
                let v = detector("count")?;
                HeadKind::Count(resolve(v, classes)?.concat())
            }
            HeadConfig::ClassCounts { classes } => {
                let v = detector("class_counts")?;
                HeadKind::ClassCounts(resolve(v, classes)?)
            }
            HeadConfig::Occupancy {
                classes,
                rows,
                cols,
            } => {
                let v = detector("occupancy")?;
                if *rows == 0 || *cols == 0 {
                    return Err(err(format!(
                        "the grid must have at least one cell, found {rows} x {cols}"
                    )));
                }
                HeadKind::Occupancy {
                    ids: resolve(v, classes)?.concat(),
                    rows: *rows,
                    cols: *cols,
                }
            }
            HeadConfig::Boxes {
                classes,
                grid,
                max_boxes,
            } => {
                let v = detector("boxes")?;
                if *grid < 2 || *max_boxes == 0 {
                    return Err(err(format!(
                        "`grid` must be at least 2 and `max_boxes` at least 1, found {grid} and {max_boxes}"
                    )));
                }
                HeadKind::Boxes {
                    ids: resolve(v, classes)?.concat(),
                    grid: *grid,
                    max_boxes: *max_boxes,
                }
            }
            HeadConfig::Probs { groups } => {
                HeadKind::Probs(Classes::new(classifier("probs")?, groups).map_err(&err)?)
            }
            HeadConfig::Label { groups } => {
                HeadKind::Label(Classes::new(classifier("label")?, groups).map_err(&err)?)
            }
            HeadConfig::Features => {
                if adapter != AdapterKind::EfficientnetLite {
                    return Err(err(format!(
                        "features needs efficientnet_lite, not {adapter:?}"
                    )));
                }
                HeadKind::Features
            }
        };
        let spec = match &kind {
            HeadKind::Count(_) => OutputSpec::vector(1, TaskKind::Count),
            HeadKind::ClassCounts(c) => OutputSpec::vector(c.len(), TaskKind::Count),
            HeadKind::Occupancy { rows, cols, .. } => {
                OutputSpec::vector(rows * cols, TaskKind::Count)
            }
            HeadKind::Probs(c) | HeadKind::Label(c) => {
                OutputSpec::vector(c.len(), TaskKind::SingleLabel)
            }
            HeadKind::Features => OutputSpec::vector(FEATURES_LEN, TaskKind::Regression),
            HeadKind::Boxes {
                grid, max_boxes, ..
            } => OutputSpec::sequence(grid + 1, 4 * max_boxes + 1, *grid as u32),
        };
        Ok(Self { kind, spec })
    }

    pub fn spec(&self) -> &OutputSpec {
        &self.spec
    }

    /// The head's value for one frame of `width` x `height`.
    pub fn apply(&self, out: &AdapterOutput, width: u32, height: u32) -> OutputValue {
        let dets: &[Detection] = match out {
            AdapterOutput::Detections(d) => d,
            AdapterOutput::Classes { .. } => &[],
        };
        match &self.kind {
            HeadKind::Count(ids) => OutputValue::Vector(vec![of(dets, ids).count() as f32]),
            HeadKind::ClassCounts(groups) => OutputValue::Vector(
                groups
                    .iter()
                    .map(|ids| of(dets, ids).count() as f32)
                    .collect(),
            ),
            HeadKind::Occupancy { ids, rows, cols } => {
                let mut grid = vec![0.0; rows * cols];
                for d in of(dets, ids) {
                    let (cx, cy) = d.centre();
                    let c = ((cx / width as f32 * *cols as f32) as usize).min(cols - 1);
                    let r = ((cy / height as f32 * *rows as f32) as usize).min(rows - 1);
                    grid[r * cols + c] += 1.0;
                }
                OutputValue::Vector(grid)
            }
            HeadKind::Boxes {
                ids,
                grid,
                max_boxes,
            } => {
                let mut chosen: Vec<&Detection> = of(dets, ids).collect();
                chosen.sort_by(|a, b| b.score.total_cmp(&a.score));
                chosen.truncate(*max_boxes);
                let q = |v: f32, extent: u32| {
                    ((v / extent as f32 * *grid as f32) as i64).clamp(0, *grid as i64 - 1) as u32
                };
                let mut boxes: Vec<[u32; 4]> = chosen
                    .iter()
                    .map(|d| {
                        [
                            q(d.x1, width),
                            q(d.y1, height),
                            q(d.x2, width),
                            q(d.y2, height),
                        ]
                    })
                    .collect();
                boxes.sort();
                let mut tokens: Vec<u32> = boxes.concat();
                tokens.push(*grid as u32);
                OutputValue::Tokens(tokens)
            }
            HeadKind::Probs(c) | HeadKind::Label(c) => {
                let n = c.n;
                let probs = match out {
                    AdapterOutput::Classes { probs, .. } => {
                        mean(probs, n).unwrap_or_else(|| vec![1.0 / n as f32; n])
                    }
                    AdapterOutput::Detections(_) => vec![1.0 / n as f32; n],
                };
                let probs = c.fold(probs);
                if matches!(self.kind, HeadKind::Label(_)) && out_has_images(out) {
                    let mut onehot = vec![0.0; probs.len()];
                    if let Some(i) = argmax(&probs) {
                        onehot[i] = 1.0;
                    }
                    OutputValue::Vector(onehot)
                } else {
                    OutputValue::Vector(probs)
                }
            }
            HeadKind::Features => match out {
                AdapterOutput::Classes { features, .. } => OutputValue::Vector(
                    mean(features, FEATURES_LEN).unwrap_or_else(|| vec![0.0; FEATURES_LEN]),
                ),
                AdapterOutput::Detections(_) => OutputValue::Vector(vec![0.0; FEATURES_LEN]),
            },
        }
    }
}

fn of<'a>(dets: &'a [Detection], ids: &'a [u32]) -> impl Iterator<Item = &'a Detection> + 'a {
    dets.iter().filter(move |d| ids.contains(&d.class))
}

fn out_has_images(out: &AdapterOutput) -> bool {
    matches!(out, AdapterOutput::Classes { probs, .. } if !probs.is_empty())
}

/// Element-wise mean of equally long vectors; `None` when there are none.
fn mean(rows: &[Vec<f32>], len: usize) -> Option<Vec<f32>> {
    if rows.is_empty() {
        return None;
    }
    let mut acc = vec![0.0f32; len];
    for r in rows {
        for (a, v) in acc.iter_mut().zip(r) {
            *a += v;
        }
    }
    let n = rows.len() as f32;
    Some(acc.into_iter().map(|a| a / n).collect())
}

/// The output spec of a model's head, from its configuration without creating a session.
/// Face-attribute classifiers read their class count from the ONNX file's declared output
/// (hence `base_dir`, the folder model paths are relative to: the pipeline file's folder).
pub fn head_spec(cfg: &ModelConfig, base_dir: &Path) -> Result<OutputSpec, ModelError> {
    let num_classes = declared_classes(cfg, base_dir)?;
    Ok(Head::new(&cfg.id, cfg.adapter, &cfg.head, num_classes)?.spec)
}

/// The names of a model's link view entries, from its configuration without creating a
/// session (like [`head_spec`]).
pub fn view_names(cfg: &ModelConfig, base_dir: &Path) -> Result<Vec<String>, ModelError> {
    let num_classes = declared_classes(cfg, base_dir)?;
    Ok(View::new(
        &cfg.id,
        cfg.adapter,
        cfg.view.as_ref(),
        &cfg.head,
        num_classes,
    )?
    .names()
    .to_vec())
}

/// A classifier's class count as its family or ONNX file declares it (None for detectors).
fn declared_classes(cfg: &ModelConfig, base_dir: &Path) -> Result<Option<usize>, ModelError> {
    Ok(match cfg.adapter {
        AdapterKind::EfficientnetLite => Some(IMAGENET_CLASSES),
        AdapterKind::FaceAttribute => {
            let path = base_dir.join(&cfg.path);
            let sig = read_signature(&path)?;
            let classes = sig
                .outputs
                .first()
                .and_then(|o| o.dims.get(1).copied().flatten())
                .filter(|&c| c >= 2)
                .ok_or_else(|| ModelError::Mismatch {
                    model: cfg.id.clone(),
                    path: path.clone(),
                    adapter: "face_attribute",
                    message: "expected an output [N, classes]".into(),
                })?;
            Some(classes as usize)
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_one_class_detector_counts_its_class_when_classes_are_left_out() {
        let none = HeadConfig::Count { classes: vec![] };
        let h = Head::new("poses", AdapterKind::MovenetMultipose, &none, None).unwrap();
        assert_eq!(h.spec, OutputSpec::vector(1, TaskKind::Count));
        assert!(Head::new("faces", AdapterKind::Blazeface, &none, None).is_ok());
        let e = Head::new("det", AdapterKind::Nanodet, &none, None).unwrap_err();
        assert!(e.to_string().contains("`classes` is empty"), "{e}");
    }

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

    fn coco(head: HeadConfig) -> Head {
        Head::new("m", AdapterKind::Centernet, &head, None).unwrap()
    }

    #[test]
    fn count_occupancy_and_boxes_follow_the_detections() {
        let out = AdapterOutput::Detections(vec![
            det(0, 0.9, 0.0, 0.0, 10.0, 10.0),
            det(0, 0.8, 90.0, 90.0, 100.0, 100.0),
            det(2, 0.7, 40.0, 40.0, 60.0, 60.0),
        ]);
        let classes = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let count = coco(HeadConfig::Count {
            classes: classes(&["person"]),
        });
        assert_eq!(count.apply(&out, 100, 100), OutputValue::Vector(vec![2.0]));
        let cc = coco(HeadConfig::ClassCounts {
            classes: classes(&["person", "vehicle", "dog"]),
        });
        assert_eq!(
            cc.apply(&out, 100, 100),
            OutputValue::Vector(vec![2.0, 1.0, 0.0])
        );
        let occ = coco(HeadConfig::Occupancy {
            classes: classes(&["person"]),
            rows: 2,
            cols: 2,
        });
        assert_eq!(
            occ.apply(&out, 100, 100),
            OutputValue::Vector(vec![1.0, 0.0, 0.0, 1.0])
        );
        let boxes = coco(HeadConfig::Boxes {
            classes: classes(&["person", "car"]),
            grid: 10,
            max_boxes: 2,
        });
        let v = boxes.apply(&out, 100, 100);
        assert_eq!(v, OutputValue::Tokens(vec![0, 0, 1, 1, 9, 9, 9, 9, 10]));
        assert!(boxes.spec().check(&v).is_ok());
        assert_eq!(boxes.spec(), &OutputSpec::sequence(11, 9, 10));
    }

    #[test]
    fn classifier_heads_average_crops_and_handle_none() {
        let probs = Head::new(
            "g",
            AdapterKind::FaceAttribute,
            &HeadConfig::Probs { groups: vec![] },
            Some(2),
        )
        .unwrap();
        let label = Head::new(
            "g",
            AdapterKind::FaceAttribute,
            &HeadConfig::Label { groups: vec![] },
            Some(2),
        )
        .unwrap();
        let two = AdapterOutput::Classes {
            probs: vec![vec![0.2, 0.8], vec![0.4, 0.6]],
            features: vec![],
        };
        let v = probs.apply(&two, 1, 1);
        let OutputValue::Vector(p) = &v else { panic!() };
        assert!((p[0] - 0.3).abs() < 1e-6 && (p[1] - 0.7).abs() < 1e-6);
        assert_eq!(label.apply(&two, 1, 1), OutputValue::Vector(vec![0.0, 1.0]));
        let none = AdapterOutput::Classes {
            probs: vec![],
            features: vec![],
        };
        assert_eq!(
            probs.apply(&none, 1, 1),
            OutputValue::Vector(vec![0.5, 0.5])
        );
        assert_eq!(
            label.apply(&none, 1, 1),
            OutputValue::Vector(vec![0.5, 0.5])
        );
    }

    #[test]
    fn heads_that_do_not_fit_the_family_are_rejected() {
        assert!(
            Head::new(
                "m",
                AdapterKind::Centernet,
                &HeadConfig::Probs { groups: vec![] },
                None
            )
            .is_err()
        );
        assert!(
            Head::new(
                "m",
                AdapterKind::EfficientnetLite,
                &HeadConfig::Count {
                    classes: vec!["person".into()]
                },
                Some(1000)
            )
            .is_err()
        );
        assert!(
            Head::new(
                "m",
                AdapterKind::FaceAttribute,
                &HeadConfig::Features,
                Some(2)
            )
            .is_err()
        );
        let e = Head::new(
            "m",
            AdapterKind::Blazeface,
            &HeadConfig::Count {
                classes: vec!["person".into()],
            },
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("`face`"), "{e}");
    }
}
