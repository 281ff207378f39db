//! Class names: COCO-80 for the detectors, ImageNet-1k names read from the footage folder, and
//! the class groups a head may name.

use super::ModelError;
use std::path::Path;

/// COCO-80 class names in the usual (0-based) order, as the detectors number them (declared
/// once, in the pipeline file types, which validate class names against it).
pub use crate::config::COCO_CLASSES;

/// The COCO classes the group name `vehicle` stands for.
pub const VEHICLE_CLASSES: &[&str] = crate::config::COCO_GROUPS[0].1;

/// Class id of faces in BlazeFace detections (its only class).
pub const FACE_CLASS: u32 = 0;
/// Class id of people in MoveNet detections (COCO's `person`).
pub const PERSON_CLASS: u32 = 0;

/// Which class vocabulary a detector family's detections use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClassVocabulary {
    /// COCO-80 (CenterNet, NanoDet).
    Coco,
    /// Only `person` (MoveNet).
    Person,
    /// Only `face` (BlazeFace).
    Face,
}

impl ClassVocabulary {
    /// The class ids one name of a head's `classes` list stands for.
    pub fn resolve(self, name: &str) -> Result<Vec<u32>, String> {
        let allowed = || match self {
            ClassVocabulary::Coco => {
                "a COCO-80 class name or a group (`vehicle`, `object`)".to_string()
            }
            ClassVocabulary::Person => "`person`".to_string(),
            ClassVocabulary::Face => "`face`".to_string(),
        };
        match self {
            ClassVocabulary::Coco => {
                if let Some(ids) = crate::config::coco_class_indices(name) {
                    return Ok(ids.into_iter().map(|i| i as u32).collect());
                }
                coco_id(name).map(|i| vec![i]).ok_or_else(|| {
                    let groups = crate::config::COCO_GROUPS.iter().map(|(g, _)| *g);
                    let hint = closest(name, COCO_CLASSES.iter().copied().chain(groups));
                    format!("unknown class {name:?}: expected {}{hint}", allowed())
                })
            }
            ClassVocabulary::Person if name == "person" => Ok(vec![PERSON_CLASS]),
            ClassVocabulary::Face if name == "face" => Ok(vec![FACE_CLASS]),
            _ => Err(format!(
                "unknown class {name:?} for this model: expected {}",
                allowed()
            )),
        }
    }

    /// Name of a class id in this vocabulary.
    pub fn name(self, id: u32) -> &'static str {
        match self {
            ClassVocabulary::Coco => COCO_CLASSES.get(id as usize).copied().unwrap_or("unknown"),
            ClassVocabulary::Person => "person",
            ClassVocabulary::Face => "face",
        }
    }
}

/// The 0-based COCO id of a class name.
pub fn coco_id(name: &str) -> Option<u32> {
    COCO_CLASSES
        .iter()
        .position(|c| *c == name)
        .map(|i| i as u32)
}

fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    candidates
        .map(|c| (strsim::jaro_winkler(name, c), c))
        .filter(|(s, _)| *s > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| format!(" (did you mean {c:?}?)"))
        .unwrap_or_default()
}

/// Reads the ImageNet-1k class names (one a line, 1000 lines), e.g.
/// `data/footage/classification_classes_ILSVRC2012.txt`.
pub fn read_imagenet_names(path: &Path) -> Result<Vec<String>, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let names: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    let names: Vec<String> = names.into_iter().filter(|l| !l.is_empty()).collect();
    if names.len() != 1000 {
        return Err(ModelError::BadFile {
            path: path.to_path_buf(),
            message: format!("expected 1000 ImageNet class names, found {}", names.len()),
        });
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_names_groups_and_suggests() {
        assert_eq!(ClassVocabulary::Coco.resolve("person").unwrap(), vec![0]);
        assert_eq!(
            ClassVocabulary::Coco.resolve("vehicle").unwrap(),
            vec![1, 2, 3, 5, 6, 7]
        );
        let e = ClassVocabulary::Coco.resolve("persn").unwrap_err();
        assert!(e.contains("did you mean \"person\""), "{e}");
        assert!(ClassVocabulary::Face.resolve("person").is_err());
        assert_eq!(ClassVocabulary::Person.resolve("person").unwrap(), vec![0]);
        let objects = ClassVocabulary::Coco.resolve("object").unwrap();
        assert_eq!(objects.len(), 79);
        assert!(!objects.contains(&0) && objects.contains(&79));
    }
}
