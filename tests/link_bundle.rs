//! Link bundles: ensembles over source subsets, persistence, corruption and model checks.

use mlink::link::{BundleError, LinkBundle, Sample, TrainParams};
use mlink::output::{OutputSpec, OutputValue, TaskKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

type Models = Vec<(String, OutputSpec)>;
type Samples = Vec<Sample>;

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
            Sample::complete([
                one_hot(c, &mut rng),
                one_hot((good + 1) % n, &mut rng),
                one_hot((noisy + 2) % n, &mut rng),
            ])
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
    for s in samples.iter().take(10) {
        let act = [(1, s[1].as_ref().unwrap())];
        let lb = b.predicted_loss(0, &act).unwrap();
        assert!(lb.is_finite());
        assert_eq!(Some(lb), c.predicted_loss(0, &act));
    }
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
                crops_from: None,
                view: vec![],
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
            outputs: s.outputs.clone(),
            views: vec![],
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
            Sample::complete([
                OutputValue::Vector(vec![seen]),
                OutputValue::Vector(vec![truth + 1.0]),
            ])
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

/// Area under the ROC curve of `scores` separating `positive` samples from the others.
fn auc(scores: &[f64], positive: &[bool]) -> f64 {
    let (mut pairs, mut wins) = (0.0, 0.0);
    for (a, pa) in scores.iter().zip(positive) {
        for (b, pb) in scores.iter().zip(positive) {
            if *pa && !*pb {
                pairs += 1.0;
                wins += if a > b {
                    1.0
                } else if a == b {
                    0.5
                } else {
                    0.0
                };
            }
        }
    }
    wins / pairs
}

/// A regression link whose target is clean where the source's first feature is positive and
/// noisy where it is negative: samples and whether each is in the noisy (hard) region.
fn noisy_region_samples(n: usize, seed: u64) -> (Samples, Vec<bool>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut hard = Vec::new();
    let samples = (0..n)
        .map(|_| {
            let x: Vec<f32> = (0..3).map(|_| rng.random_range(-1.0..1.0)).collect();
            let noisy = x[0] < 0.0;
            hard.push(noisy);
            let noise = if noisy {
                rng.random_range(-1.5..1.5)
            } else {
                0.0
            };
            let y = vec![2.0 * x[0] - x[1] + noise, x[2]];
            Sample::complete([OutputValue::Vector(x), OutputValue::Vector(y)])
        })
        .collect();
    (samples, hard)
}

#[test]
fn predicted_loss_ranks_hard_samples_above_easy_ones() {
    let models = vec![
        ("a".to_string(), OutputSpec::vector(3, TaskKind::Regression)),
        ("b".to_string(), OutputSpec::vector(2, TaskKind::Regression)),
    ];
    let (train, _) = noisy_region_samples(800, 51);
    let b = LinkBundle::train(&models, &train, &TrainParams::default(), 0.2, 2, &|_| {}).unwrap();
    let (test, hard) = noisy_region_samples(400, 52);
    let predicted: Vec<f64> = test
        .iter()
        .map(|s| b.predicted_loss(1, &[(0, s[0].as_ref().unwrap())]).unwrap())
        .collect();
    let a = auc(&predicted, &hard);
    assert!(a > 0.8, "AUC of predicted loss, hard vs easy: {a}");
    // The head predicts losses on their scale: hard samples' mean above easy ones'.
    let mean = |want: bool| {
        let v: Vec<f64> = predicted
            .iter()
            .zip(&hard)
            .filter(|(_, h)| **h == want)
            .map(|(p, _)| *p)
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    assert!(
        mean(true) > mean(false) + 0.1,
        "{} vs {}",
        mean(true),
        mean(false)
    );
    // The target itself is no source, and an output of the wrong shape gives no prediction.
    assert_eq!(
        b.predicted_loss(1, &[(1, test[0][1].as_ref().unwrap())]),
        None
    );
    let e = b
        .link_predicted_loss(0, 1, &OutputValue::Vector(vec![1.0]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"a\""), "{e}");
}

#[test]
fn fine_tune_and_rescore_follows_a_shifted_link_and_score_on_agrees() {
    let spec = OutputSpec::vector(1, TaskKind::Count);
    let models = vec![("a".to_string(), spec.clone()), ("b".to_string(), spec)];
    let counts = |n: usize, offset: f32, seed: u64| -> Samples {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let a = rng.random_range(0..=10) as f32;
                Sample::complete([
                    OutputValue::Vector(vec![a]),
                    OutputValue::Vector(vec![a + offset]),
                ])
            })
            .collect()
    };
    let mut b = LinkBundle::train(
        &models,
        &counts(300, 1.0, 61),
        &TrainParams::default(),
        0.2,
        2,
        &|_| {},
    )
    .unwrap();
    let before = b.link_score(0, 1);
    assert!(before > 0.95, "{before}");
    // The scene changes: b now counts three more than a.
    let (new_train, new_val) = (counts(300, 3.0, 62), counts(100, 3.0, 63));
    let measured = b.score_on(&new_val, &[0]).unwrap();
    let stale = measured.links[0][1].unwrap();
    assert_eq!(stale.samples, 100);
    assert!(
        stale.score < 0.1,
        "old link on the new scene: {}",
        stale.score
    );
    // Fine-tuning without rescoring leaves p(g_ij) as it was.
    let mut plain = LinkBundle::train(
        &models,
        &counts(300, 1.0, 61),
        &TrainParams::default(),
        0.2,
        2,
        &|_| {},
    )
    .unwrap();
    plain.fine_tune(&new_train, 30).unwrap();
    assert_eq!(plain.link_score(0, 1), before);

    b.fine_tune_and_rescore(&new_train, &new_val, 30).unwrap();
    let after = b.link_score(0, 1);
    assert!(after > 0.9, "adapted link score {after}");
    let m = b.score_on(&new_val, &[0]).unwrap();
    let link = m.links[0][1].unwrap();
    assert!((link.score - after).abs() < 1e-12);
    assert!(m.links[1][1].is_none() && m.links[0][0].is_none());
    // One source: the ensemble is the link, and the stored ensemble score follows.
    let ens = m.ensembles[1].unwrap();
    assert!((ens.score - after).abs() < 1e-12);
    assert!((b.ensemble_score(&[0], 1) - after).abs() < 1e-12);
    assert!(m.ensembles[0].is_none(), "model 0 is active, not predicted");
    assert!(b.score_on(&new_val, &[5]).is_err());
}

#[test]
fn federated_and_adaptation_hooks_reject_samples_that_do_not_fit_the_models() {
    let (_, samples, mut b) = train();
    let short: Samples = vec![Sample::new(samples[0].outputs[..2].to_vec())];
    let e = b.fine_tune(&short, 1).unwrap_err().to_string();
    assert!(e.contains("sample 0 has 2 outputs for 3 models"), "{e}");
    let mut wrong = samples[..4].to_vec();
    wrong[3][2] = Some(OutputValue::Vector(vec![0.5; 4]));
    for e in [
        b.fine_tune(&wrong, 1).unwrap_err(),
        b.link_gradient(2, 0, &wrong).unwrap_err(),
        b.train_round(2, 0, &wrong, 1).unwrap_err(),
        b.fine_tune_and_rescore(&samples[..4], &wrong, 1)
            .unwrap_err(),
    ] {
        let e = e.to_string();
        assert!(e.contains("sample 3") && e.contains("\"noisy\""), "{e}");
    }
    let tokens = vec![Sample::new(vec![
        Some(OutputValue::Tokens(vec![1, 2])),
        samples[0][1].clone(),
        samples[0][2].clone(),
    ])];
    assert!(b.link_gradient(1, 0, &tokens).is_err());
    let none: Samples = vec![Sample::new(vec![samples[0][0].clone(), None, None])];
    let e = b.train_round(2, 0, &none, 1).unwrap_err().to_string();
    assert!(e.contains("both model 2 and model 0"), "{e}");
    assert!(b.link_gradient(0, 0, &samples).is_err());
    assert!(b.train_round(7, 0, &samples, 1).is_err());
    // Nothing was changed by the rejected calls.
    let (_, _, fresh) = train();
    assert_eq!(
        b.link_params(2, 0).unwrap(),
        fresh.link_params(2, 0).unwrap()
    );
}
