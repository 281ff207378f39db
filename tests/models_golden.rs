//! Golden tests: the real models on real frames.

mod models_support;

use mlink::config::{AdapterKind, HeadConfig};
use mlink::metrics::Metrics;
use mlink::models::LoadedModel;
use models_support::*;

fn load(cfg: &mlink::config::ModelConfig) -> LoadedModel {
    LoadedModel::load(cfg, &models_dir(), &Metrics::new()).unwrap()
}

fn persons_and_vehicles(id: &str, file: &str, adapter: AdapterKind) {
    let frames = decode("vtest.avi", &[0, 40, 80], 768, 576);
    let mut cfg = model(
        id,
        file,
        adapter,
        HeadConfig::ClassCounts {
            classes: classes(&["person", "vehicle"]),
        },
    );
    // At the default 0.3 CenterNet also reports some bags and shadows as people on this footage.
    cfg.min_score = 0.4;
    let mut m = load(&cfg);
    for f in &frames {
        let inf = m.infer(f, None).unwrap();
        let c = count_of(&inf.value);
        assert!(
            (2.0..=9.0).contains(&c[0]),
            "{id} frame {}: {} persons",
            f.seq,
            c[0]
        );
        assert!(
            (0.0..=3.0).contains(&c[1]),
            "{id} frame {}: {} vehicles",
            f.seq,
            c[1]
        );
        for d in &inf.detections {
            assert!(
                d.x1 >= 0.0
                    && d.x2 <= 768.0
                    && d.y1 >= 0.0
                    && d.y2 <= 576.0
                    && d.x1 < d.x2
                    && d.y1 < d.y2
            );
        }
        // Pedestrians seen from above are taller than wide.
        let people: Vec<_> = inf.detections.iter().filter(|d| d.class == 0).collect();
        let tall = people.iter().filter(|d| d.y2 - d.y1 > d.x2 - d.x1).count();
        assert!(tall * 2 > people.len(), "{id}: boxes look transposed");
    }
}

#[test]
fn centernet_finds_people_and_about_one_vehicle_on_vtest() {
    persons_and_vehicles("centernet", "centernet.onnx", AdapterKind::Centernet);
}

#[test]
fn nanodet_finds_people_and_about_one_vehicle_on_vtest() {
    persons_and_vehicles("nanodet", "nanodet.onnx", AdapterKind::Nanodet);
}

#[test]
fn movenet_finds_people_with_keypoints_on_vtest() {
    let frames = decode("vtest.avi", &[0, 40, 80], 768, 576);
    let cfg = model(
        "pose",
        "movenet-multipose.onnx",
        AdapterKind::MovenetMultipose,
        HeadConfig::Count {
            classes: classes(&["person"]),
        },
    );
    let mut m = load(&cfg);
    for f in &frames {
        let inf = m.infer(f, None).unwrap();
        let n = count_of(&inf.value)[0];
        assert!((2.0..=9.0).contains(&n), "frame {}: {n} people", f.seq);
        assert!(inf.detections.iter().all(|d| d.keypoints.len() == 17));
    }
}

#[test]
fn blazeface_finds_the_face_and_gender_says_male() {
    let frame = &decode("carphone_pristine.mp4", &[0], 176, 144)[0];
    let mut face = load(&model(
        "faces",
        "blazeface.onnx",
        AdapterKind::Blazeface,
        HeadConfig::Count {
            classes: classes(&["face"]),
        },
    ));
    let inf = face.infer(frame, None).unwrap();
    assert_eq!(count_of(&inf.value), vec![1.0], "{:?}", inf.detections);
    let d = &inf.detections[0];
    assert!(
        d.x2 - d.x1 > 20.0 && d.y2 - d.y1 > 20.0,
        "face too small: {d:?}"
    );

    let mut gcfg = model(
        "gender",
        "gender.onnx",
        AdapterKind::FaceAttribute,
        HeadConfig::Probs { groups: vec![] },
    );
    gcfg.crops_from = Some("faces".into());
    let mut gender = load(&gcfg);
    let g = gender.infer(frame, Some(&inf.detections)).unwrap();
    let p = count_of(&g.value);
    assert_eq!(p.len(), 2);
    assert!(p[1] > 0.5, "gender probabilities (female, male) = {p:?}");

    // No faces: no run, uniform probabilities.
    let none = gender.infer(frame, Some(&[])).unwrap();
    assert_eq!(count_of(&none.value), vec![0.5, 0.5]);

    let mut acfg = model(
        "age",
        "age.onnx",
        AdapterKind::FaceAttribute,
        HeadConfig::Label { groups: vec![] },
    );
    acfg.crops_from = Some("faces".into());
    let mut age = load(&acfg);
    let a = count_of(&age.infer(frame, Some(&inf.detections)).unwrap().value);
    assert_eq!(a.len(), 81);
    assert_eq!(a.iter().sum::<f32>(), 1.0);
}

#[test]
fn efficientnet_classifies_the_fox_squirrel() {
    let frame = &decode("squirrel_cls.jpg", &[0], 535, 426)[0];
    let mut m = load(&model(
        "cls",
        "efficientnet-lite0.onnx",
        AdapterKind::EfficientnetLite,
        HeadConfig::Label { groups: vec![] },
    ));
    let v = count_of(&m.infer(frame, None).unwrap().value);
    assert_eq!(v.iter().position(|&x| x == 1.0), Some(335));
    let names = mlink::models::classes::read_imagenet_names(&footage(
        "classification_classes_ILSVRC2012.txt",
    ))
    .unwrap();
    assert!(names[335].starts_with("fox squirrel"));
    let mut f = load(&model(
        "feat",
        "efficientnet-lite0.onnx",
        AdapterKind::EfficientnetLite,
        HeadConfig::Features,
    ));
    let feats = count_of(&f.infer(frame, None).unwrap().value);
    assert_eq!(feats.len(), 1280);
    assert!(
        feats.iter().any(|&x| x > 0.0) && feats.iter().all(|&x| x >= 0.0),
        "ReLU6 features"
    );
}
