//! Link bundles: ensembles over source subsets, persistence, corruption and model checks.

use mlink::link::{BundleError, LinkBundle, TrainParams};
use mlink::output::{OutputSpec, OutputValue, TaskKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

type Models = Vec<(String, OutputSpec)>;
type Samples = Vec<Vec<Option<OutputValue>>>;

/// Three models: a target class, a good source (the class with little noise) and a noisy
/// source (the class most of the time, otherwise random).
fn data() -> (Models, Samples) {
    let n = 6;
    let spec = OutputSpec::vector(n, TaskKind::SingleLabel);
    let models = vec![
        ("target".to_string(), spec.clone()),
        ("good".to_string(), spec.clone()),
        ("noisy".to_string(), spec),
    ];
    let mut rng = StdRng::seed_from_u64(9);
    let one_hot = |c: usize, rng: &mut StdRng| {
        let mut v: Vec<f32> = (0..n).map(|_| rng.random_range(0.0..0.1)).collect();
        v[c] += 1.0;
        let s: f32 = v.iter().sum();
        OutputValue::Vector(v.iter().map(|x| x / s).collect())
    };
    let samples = (0..600)
        .map(|_| {
            let c = rng.random_range(0..n);
            let good = if rng.random_bool(0.95) {
                c
            } else {
                rng.random_range(0..n)
            };
            let noisy = if rng.random_bool(0.5) {
                c
            } else {
                rng.random_range(0..n)
            };
            vec![
                Some(one_hot(c, &mut rng)),
                Some(one_hot((good + 1) % n, &mut rng)),
                Some(one_hot((noisy + 2) % n, &mut rng)),
            ]
        })
        .collect();
    (models, samples)
}

fn train() -> (Models, Samples, LinkBundle) {
    let (models, samples) = data();
    let p = TrainParams {
        epochs: 20,
        ..TrainParams::default()
    };
    let b = LinkBundle::train(&models, &samples, &p, 0.25, 2, &|_| {}).unwrap();
    (models, samples, b)
}

#[test]
fn ensemble_beats_the_noisy_source_and_matches_links_on_single_sources() {
    let (_, samples, b) = train();
    let good = b.link_score(1, 0);
    let noisy = b.link_score(2, 0);
    let both = b.ensemble_score(&[1, 2], 0);
    assert!(good > noisy + 0.2, "good {good} noisy {noisy}");
    assert!(
        both >= good - 1e-9,
        "ensemble {both} below the good source {good}"
    );
    assert!(both > noisy);
    // Restricted to the noisy source, the ensemble is exactly that source's link.
    assert!((b.ensemble_score(&[2], 0) - noisy).abs() < 1e-12);
    for s in samples.iter().take(20) {
        let y = s[2].as_ref().unwrap();
        let p = b.predict(0, &[(2, y)]).unwrap();
        let l = b.link(2, 0).unwrap().net.predict(y).unwrap();
        assert_eq!(p.value, l);
        assert_eq!(p.sources, vec![2]);
        let p2 = b
            .predict(0, &[(1, s[1].as_ref().unwrap()), (2, y)])
            .unwrap();
        assert_eq!(p2.sources, vec![1, 2]);
        assert!(p2.uncertainty >= 0.0);
    }
}

#[test]
fn save_load_predict_identical_and_damage_is_reported() {
    let (models, samples, b) = train();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("links.mlb");
    b.save(&path).unwrap();
    let c = LinkBundle::load(&path).unwrap();
    for s in samples.iter().take(30) {
        let act: Vec<(usize, &OutputValue)> =
            vec![(1, s[1].as_ref().unwrap()), (2, s[2].as_ref().unwrap())];
        assert_eq!(b.predict(0, &act).unwrap(), c.predict(0, &act).unwrap());
        let a2 = [(0, s[0].as_ref().unwrap())];
        assert_eq!(b.predict(1, &a2).unwrap(), c.predict(1, &a2).unwrap());
    }
    assert_eq!(b.link_params(1, 0).unwrap(), c.link_params(1, 0).unwrap());
    c.check_models(&models).unwrap();

    let bytes = std::fs::read(&path).unwrap();
    let bad = dir.path().join("bad.mlb");
    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(
        LinkBundle::load(&bad),
        Err(BundleError::Corrupt { .. })
    ));
    let mut flipped = bytes.clone();
    let at = bytes.len() - 100;
    flipped[at] ^= 0x40;
    std::fs::write(&bad, &flipped).unwrap();
    let e = LinkBundle::load(&bad).err().unwrap().to_string();
    assert!(e.contains("checksum"), "{e}");
    std::fs::write(&bad, b"not a bundle").unwrap();
    assert!(LinkBundle::load(&bad).is_err());

    let mut other = models.clone();
    other[1].1 = OutputSpec::vector(7, TaskKind::SingleLabel);
    let e = c.check_models(&other).unwrap_err().to_string();
    assert!(e.contains("\"good\""), "{e}");
    other[1].0 = "missing".into();
    let e = c.check_models(&other).unwrap_err().to_string();
    assert!(e.contains("\"missing\""), "{e}");
}

#[test]
fn federated_hooks_round_trip_parameters() {
    let (_, samples, mut b) = train();
    let p = b.link_params(2, 0).unwrap();
    let g = b.link_gradient(2, 0, &samples[..64]).unwrap();
    assert_eq!(g.len(), p.len());
    assert!(g.iter().any(|x| *x != 0.0));
    let delta = b.train_round(2, 0, &samples[..64], 1).unwrap();
    let after = b.link_params(2, 0).unwrap();
    for ((a, q), d) in after.iter().zip(&p).zip(&delta) {
        assert!((a - q - d).abs() < 1e-6);
    }
    b.set_link_params(2, 0, &p).unwrap();
    assert_eq!(b.link_params(2, 0).unwrap(), p);
    assert!(b.set_link_params(2, 0, &p[1..]).is_err());
}

#[test]
fn training_is_reproducible() {
    let (_, _, a) = train();
    let (_, _, b) = train();
    assert_eq!(a.link_params(1, 0).unwrap(), b.link_params(1, 0).unwrap());
    assert_eq!(a.ensemble_score(&[1, 2], 0), b.ensemble_score(&[1, 2], 0));
}

#[test]
fn trains_from_a_trace_file() {
    use mlink::link::trace::{TraceHeader, TraceModel, TraceRecord, TraceWriter, read_all};
    let (models, samples) = data();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.trace");
    let header = TraceHeader {
        models: models
            .iter()
            .map(|(id, spec)| TraceModel {
                id: id.clone(),
                spec: spec.clone(),
                memory_mb: None,
                latency_ms: None,
            })
            .collect(),
        frame_feature_names: vec![],
        source: "synthetic".into(),
    };
    let mut w = TraceWriter::create(&path, &header).unwrap();
    for (n, s) in samples.iter().enumerate() {
        w.append(&TraceRecord {
            camera: "c".into(),
            seq: n as u64,
            time_s: n as f64 / 10.0,
            outputs: s.clone(),
            frame_features: vec![],
        })
        .unwrap();
    }
    w.finish().unwrap();
    let (h, recs) = read_all(&path).unwrap();
    let p = TrainParams {
        epochs: 5,
        ..TrainParams::default()
    };
    let b = LinkBundle::train_from_trace(&h, &recs, &p, 0.2, 2, &|_| {}).unwrap();
    assert_eq!(b.meta.source, "synthetic");
    assert!(b.link_score(1, 0) > 0.5);
}

/// Two counting models: `a` counts objects, `b` counts the same objects plus one
/// (`b = a + 1`, counts 0 to 10). With probability `miss`, `a` is off by one (a detector that
/// misses or doubles an object now and then), so a link can be right on at most about
/// `1 - miss` of the frames.
fn count_samples(n: usize, miss: f64, seed: u64) -> Samples {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let truth = rng.random_range(0..=10) as f32;
            let seen = if rng.random_bool(miss) {
                (truth + if rng.random_bool(0.5) { 1.0 } else { -1.0 }).max(0.0)
            } else {
                truth
            };
            vec![
                Some(OutputValue::Vector(vec![seen])),
                Some(OutputValue::Vector(vec![truth + 1.0])),
            ]
        })
        .collect()
}

/// Count accuracy (|error| < 0.5) of the link a -> b on held-out samples, default training.
fn held_out_count_accuracy(miss: f64) -> f64 {
    let spec = OutputSpec::vector(1, TaskKind::Count);
    let models = vec![("a".to_string(), spec.clone()), ("b".to_string(), spec)];
    let train = count_samples(400, miss, 31);
    let b = LinkBundle::train(&models, &train, &TrainParams::default(), 0.2, 2, &|_| {}).unwrap();
    let test = count_samples(500, miss, 32);
    let hits = test
        .iter()
        .filter(|s| {
            let src = s[0].as_ref().unwrap();
            let OutputValue::Vector(p) = b.predict(1, &[(0, src)]).unwrap().value else {
                panic!("a count is a vector")
            };
            let OutputValue::Vector(t) = s[1].as_ref().unwrap() else {
                unreachable!()
            };
            (p[0] - t[0]).abs() < 0.5
        })
        .count();
    hits as f64 / test.len() as f64
}

#[test]
fn a_count_plus_one_link_is_near_perfect_with_default_training() {
    let acc = held_out_count_accuracy(0.0);
    assert!(acc >= 0.98, "held-out count accuracy {acc}");
}

#[test]
fn a_count_link_from_a_noisy_counter_is_near_the_best_possible() {
    // One frame in five has the source off by one: about 80 % is the best any link can do.
    let acc = held_out_count_accuracy(0.2);
    assert!(acc >= 0.76, "held-out count accuracy {acc}");
}
