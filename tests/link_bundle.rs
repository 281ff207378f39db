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
    class_data(600, 9, 1)
}

/// `count` samples of three class models: the target, and sources 1 and 2, of which `good`
/// (1 or 2) gives the class (shifted by its index) 95 % of the time and the other 50 %.
fn class_data(count: usize, seed: u64, good_source: usize) -> (Models, Samples) {
    let n = 6;
    let spec = OutputSpec::vector(n, TaskKind::SingleLabel);
    let models = vec![
        ("target".to_string(), spec.clone()),
        ("good".to_string(), spec.clone()),
        ("noisy".to_string(), spec),
    ];
    let mut rng = StdRng::seed_from_u64(seed);
    let one_hot = |c: usize, rng: &mut StdRng| {
        let mut v: Vec<f32> = (0..n).map(|_| rng.random_range(0.0..0.1)).collect();
        v[c] += 1.0;
        let s: f32 = v.iter().sum();
        OutputValue::Vector(v.iter().map(|x| x / s).collect())
    };
    let samples = (0..count)
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
            let (first, second) = if good_source == 1 {
                (good, noisy)
            } else {
                (noisy, good)
            };
            Sample::complete([
                one_hot(c, &mut rng),
                one_hot((first + 1) % n, &mut rng),
                one_hot((second + 2) % n, &mut rng),
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

/// A model's link view computed from its head.
type ViewOf = dyn Fn(&[f32]) -> Vec<f32>;

/// Writes `samples` as a trace of `models` (ten frames a second) and reads it back; with
/// `view`, each model's link view on a frame is `view(head)` (trace format 2).
fn trace_of(
    dir: &std::path::Path,
    models: &Models,
    samples: &Samples,
    view: Option<&ViewOf>,
) -> (
    mlink::link::trace::TraceHeader,
    Vec<mlink::link::trace::TraceRecord>,
) {
    use mlink::link::trace::{TraceHeader, TraceModel, TraceRecord, TraceWriter, read_all};
    let view_len = |spec: &OutputSpec| {
        let len = match spec.form {
            mlink::output::OutputForm::Vector { len } => len,
            mlink::output::OutputForm::Sequence { .. } => 0,
        };
        let zeros = vec![0.0; len];
        view.map_or(0, |f| f(&zeros).len())
    };
    let path = dir.join("t.trace");
    let header = TraceHeader {
        models: models
            .iter()
            .map(|(id, spec)| TraceModel {
                id: id.clone(),
                spec: spec.clone(),
                memory_mb: None,
                latency_ms: None,
                crops_from: None,
                view: (0..view_len(spec)).map(|d| format!("v{d}")).collect(),
            })
            .collect(),
        frame_feature_names: vec![],
        source: "synthetic".into(),
        thumbnail: None,
    };
    let mut w = TraceWriter::create(&path, &header).unwrap();
    for (n, s) in samples.iter().enumerate() {
        let views = match view {
            None => vec![],
            Some(f) => s
                .outputs
                .iter()
                .map(|o| match o {
                    Some(OutputValue::Vector(h)) => Some(f(h)),
                    _ => None,
                })
                .collect(),
        };
        w.append(&TraceRecord {
            camera: "c".into(),
            seq: n as u64,
            time_s: n as f64 / 10.0,
            outputs: s.outputs.clone(),
            views,
            frame_features: vec![],
            thumbnail: None,
        })
        .unwrap();
    }
    w.finish().unwrap();
    read_all(&path).unwrap()
}

#[test]
fn trains_from_a_trace_file() {
    let (models, samples) = data();
    let dir = tempfile::tempdir().unwrap();
    let (h, recs) = trace_of(dir.path(), &models, &samples, None);
    let p = TrainParams {
        epochs: 5,
        ..TrainParams::default()
    };
    let b = LinkBundle::train_from_trace(&h, &recs, &p, 0.2, 2, &|_| {}).unwrap();
    assert_eq!(b.meta.source, "synthetic");
    assert!(b.link_score(1, 0) > 0.5);
    // A format 1 trace records no views: the bundle has the paper's links only.
    assert!(b.view_links().is_none());
}

/// A link view richer than the head: the head, then each entry squared.
fn squared_view(head: &[f32]) -> Vec<f32> {
    head.iter()
        .copied()
        .chain(head.iter().map(|x| x * x))
        .collect()
}

#[test]
fn view_links_from_a_trace_serve_and_survive_save_and_load() {
    let (models, samples) = class_data(160, 3, 1);
    let dir = tempfile::tempdir().unwrap();
    let (h, recs) = trace_of(dir.path(), &models, &samples, Some(&squared_view));
    let p = TrainParams {
        epochs: 10,
        ..TrainParams::default()
    };
    let b = LinkBundle::train_from_trace(&h, &recs, &p, 0.2, 2, &|_| {}).unwrap();
    let vl = b
        .view_links()
        .expect("a trace with views trains view links");
    assert_eq!(vl.view_dims(), &[12, 12, 12]);
    let path = dir.path().join("links.mlb");
    b.save(&path).unwrap();
    let c = LinkBundle::load(&path).unwrap();
    let restored = c.view_links().expect("the view links are stored");
    assert_eq!(restored.state(), vl.state());
    let mut served_by_views = 0;
    for s in &samples[..40] {
        let outs: Vec<&OutputValue> = s.outputs.iter().map(|o| o.as_ref().unwrap()).collect();
        let views: Vec<Vec<f32>> = outs
            .iter()
            .map(|o| match o {
                OutputValue::Vector(h) => squared_view(h),
                OutputValue::Tokens(_) => unreachable!(),
            })
            .collect();
        let active = [(1, outs[1]), (2, outs[2])];
        let viewed = [(1, views[1].as_slice()), (2, views[2].as_slice())];
        let before = b.predict_viewed(0, &active, &viewed).unwrap();
        let after = c.predict_viewed(0, &active, &viewed).unwrap();
        assert_eq!(before, after);
        // The view links' value serves where every source's view is at hand...
        let inputs: Vec<(usize, mlink::link::view_links::ModelInput<'_>)> = [1, 2]
            .iter()
            .map(|&i| {
                let OutputValue::Vector(head) = outs[i] else {
                    unreachable!()
                };
                (
                    i,
                    mlink::link::view_links::ModelInput {
                        view: &views[i],
                        head,
                    },
                )
            })
            .collect();
        let direct = vl.predict(0, &inputs).unwrap();
        assert_eq!(before.value, OutputValue::Vector(direct));
        let paper = b.predict(0, &active).unwrap();
        served_by_views += usize::from(paper.value != before.value);
        // ...and the paper's ensemble where a view is missing or of another length.
        let short = [(1, &views[1][..6]), (2, views[2].as_slice())];
        assert_eq!(b.predict_viewed(0, &active, &short).unwrap(), paper);
        assert_eq!(b.predict_viewed(0, &active, &viewed[..1]).unwrap(), paper);
    }
    assert!(served_by_views > 0, "the view links never served");

    // Damage inside the view links, under a recomputed checksum, is refused with the reason;
    // under the original checksum the checksum catches it.
    let bad = dir.path().join("bad.mlb");
    edit_manifest(&path, &bad, Seal::Current, |m| {
        m["view_links"]["links"][0]["held_out"] = 1.5.into()
    });
    let e = load_err(&bad);
    assert!(
        e.contains("view links") && e.contains("not in [0, 1]"),
        "{e}"
    );
    edit_manifest(&path, &bad, Seal::Keep, |m| {
        m["view_links"]["links"][0]["held_out"] = 0.25.into()
    });
    assert!(load_err(&bad).contains("checksum mismatch"));
    // View links in a version 2 manifest cannot have been written by version 2.
    edit_manifest(&path, &bad, Seal::Current, |m| {
        m["format_version"] = 2.into()
    });
    let e = load_err(&bad);
    assert!(e.contains("view links in a version 2 bundle"), "{e}");
    // A version 2 file without them is read, and serves the paper's links.
    edit_manifest(&path, &bad, Seal::Current, |m| {
        m["format_version"] = 2.into();
        m.as_object_mut().unwrap().remove("view_links");
    });
    let v2 = LinkBundle::load(&bad).unwrap();
    assert!(v2.view_links().is_none());
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

/// How [`edit_manifest`] sets the checksum of the edited file.
#[derive(Clone, Copy, PartialEq)]
enum Seal {
    /// The original file's checksum.
    Keep,
    /// Recomputed as this version does (manifest and tensors), as a forger or a buggy writer
    /// would, so the loader's own checks of the manifest are reached.
    Current,
    /// Recomputed as version 1 did (tensors only).
    Version1,
}

/// Copies the bundle at `src` to `dst` with its manifest edited by `edit`.
fn edit_manifest(
    src: &std::path::Path,
    dst: &std::path::Path,
    seal: Seal,
    edit: impl FnOnce(&mut serde_json::Value),
) {
    use safetensors::SafeTensors;
    let bytes = std::fs::read(src).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap();
    let mut m: serde_json::Value = serde_json::from_str(&meta["mlink.manifest"]).unwrap();
    edit(&mut m);
    let json = m.to_string();
    let mut names = st.names();
    names.sort_unstable();
    let tensors: Vec<(String, safetensors::tensor::TensorView<'_>)> = names
        .iter()
        .map(|n| (n.to_string(), st.tensor(n).unwrap()))
        .collect();
    let data = tensors.iter().map(|(_, t)| t.data());
    let hash = match seal {
        Seal::Keep => meta["mlink.sha256"].clone(),
        Seal::Current => mlink::versioned::sha256_hex(std::iter::once(json.as_bytes()).chain(data)),
        Seal::Version1 => mlink::versioned::sha256_hex(data),
    };
    let out = safetensors::serialize(
        tensors,
        Some(std::collections::HashMap::from([
            ("mlink.manifest".to_string(), json),
            ("mlink.sha256".to_string(), hash),
        ])),
    )
    .unwrap();
    std::fs::write(dst, out).unwrap();
}

/// One edit of a bundle manifest.
type ManifestEdit = Box<dyn Fn(&mut serde_json::Value)>;

fn load_err(path: &std::path::Path) -> String {
    match LinkBundle::load(path) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_checksum_covers_the_manifest() {
    let (_, _, b) = train();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("links.mlb");
    b.save(&path).unwrap();
    let bad = dir.path().join("edited.mlb");
    // Each edit keeps the file well-formed and plausible; only the checksum can tell.
    let edits: [(&str, ManifestEdit); 4] = [
        ("score", Box::new(|m| m["links"][0]["score"] = 0.99.into())),
        (
            "norm",
            Box::new(|m| m["links"][0]["in_norm"]["mean"][0] = 5.0.into()),
        ),
        (
            "subset score",
            Box::new(|m| m["ensembles"][0]["subset_scores"][0][1] = 1.0.into()),
        ),
        (
            "validation split",
            Box::new(|m| m["meta"]["validation_split"] = 0.5.into()),
        ),
    ];
    for (what, edit) in edits {
        edit_manifest(&path, &bad, Seal::Keep, edit);
        let e = load_err(&bad);
        assert!(e.contains("checksum mismatch"), "{what}: {e}");
    }
    // The same edit with the checksum recomputed loads: the checksum is what caught it.
    edit_manifest(&path, &bad, Seal::Current, |m| {
        m["links"][0]["score"] = 0.99.into()
    });
    let c = LinkBundle::load(&bad).unwrap();
    let (i, j) = (0..3)
        .flat_map(|i| (0..3).map(move |j| (i, j)))
        .find(|&(i, j)| i != j && c.link(i, j).is_some_and(|l| l.score == Some(0.99)))
        .unwrap();
    assert_ne!(b.link_score(i, j), 0.99);
    // A version 1 file (checksum over the tensors only) is still read, and checked.
    let v1 = dir.path().join("v1.mlb");
    edit_manifest(&path, &v1, Seal::Version1, |m| {
        m["format_version"] = 1.into()
    });
    let c = LinkBundle::load(&v1).unwrap();
    assert_eq!(c.link_params(1, 0).unwrap(), b.link_params(1, 0).unwrap());
    edit_manifest(&path, &v1, Seal::Keep, |m| m["format_version"] = 1.into());
    assert!(load_err(&v1).contains("checksum mismatch"));
    edit_manifest(&path, &bad, Seal::Current, |m| {
        m["format_version"] = 4.into()
    });
    assert!(load_err(&bad).contains("version 4 is newer"));
}

#[test]
fn inconsistent_manifests_are_refused_at_load() {
    let (_, samples, b) = train();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("links.mlb");
    b.save(&path).unwrap();
    let bad = dir.path().join("bad.mlb");
    let cases: Vec<(&str, ManifestEdit, &str)> = vec![
        (
            "ensemble dims",
            Box::new(|m| m["ensembles"][0]["dims"] = 3.into()),
            "dims",
        ),
        (
            "ensemble source out of range",
            Box::new(|m| m["ensembles"][0]["sources"][0] = 7.into()),
            "source 7",
        ),
        (
            "ensemble source is the target",
            Box::new(|m| m["ensembles"][1]["sources"][0] = 1.into()),
            "source 1",
        ),
        (
            "in_norm length",
            Box::new(|m| {
                m["links"][0]["in_norm"]["mean"]
                    .as_array_mut()
                    .unwrap()
                    .pop();
            }),
            "in_norm",
        ),
        (
            "in_norm std 0",
            Box::new(|m| m["links"][0]["in_norm"]["std"][2] = 0.0.into()),
            "std 2",
        ),
        (
            "in_norm std negative",
            Box::new(|m| m["links"][0]["in_norm"]["std"][1] = (-1.0).into()),
            "std 1",
        ),
        (
            "out_norm on a class target",
            Box::new(|m| {
                m["links"][0]["out_norm"] =
                    serde_json::json!({"mean": vec![0.0; 6], "std": vec![1.0; 6]})
            }),
            "out_norm given",
        ),
        (
            "score above 1",
            Box::new(|m| m["links"][0]["score"] = 3.0.into()),
            "score",
        ),
        (
            "subset outside the sources",
            Box::new(|m| m["ensembles"][0]["subset_scores"][0][0] = 1.into()),
            "subset",
        ),
        (
            "architecture",
            Box::new(|m| m["links"][0]["arch"] = "seq2_vec".into()),
            "architecture",
        ),
    ];
    for (what, edit, want) in cases {
        edit_manifest(&path, &bad, Seal::Current, edit);
        let e = load_err(&bad);
        assert!(e.contains(want), "{what}: {e}");
    }
    // The untouched file still loads and predicts.
    let c = LinkBundle::load(&path).unwrap();
    let s = &samples[0];
    c.predict(
        0,
        &[(1, s[1].as_ref().unwrap()), (2, s[2].as_ref().unwrap())],
    )
    .unwrap();
}

#[test]
fn more_than_63_models_are_refused_with_a_clear_error() {
    let spec = OutputSpec::vector(1, TaskKind::Regression);
    let models: Models = (0..64).map(|i| (format!("m{i}"), spec.clone())).collect();
    let samples: Samples = vec![Sample::complete(
        (0..64).map(|i| OutputValue::Vector(vec![i as f32])),
    )];
    let e = LinkBundle::train(&models, &samples, &TrainParams::default(), 0.0, 1, &|_| {})
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("64 models: at most 63"), "{e}");

    // A forged manifest with 64 models (and no links) is refused at load, before any mask is
    // built from it.
    let (_, _, b) = train();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("links.mlb");
    b.save(&path).unwrap();
    let bad = dir.path().join("many.mlb");
    edit_manifest(&path, &bad, Seal::Current, |m| {
        let model = m["models"][0].clone();
        m["models"] = serde_json::Value::Array(vec![model; 64]);
        m["links"] = serde_json::json!([]);
        m["ensembles"] = serde_json::json!([]);
    });
    let e = load_err(&bad);
    assert!(e.contains("64 models: at most 63"), "{e}");
    // Indices beyond the mask never alias a model: ensemble_score ignores them.
    assert_eq!(b.ensemble_score(&[64, 65], 0), 0.0);
}

#[test]
fn validation_holds_out_the_last_block_in_time() {
    // b counts one more than a for the first 400 frames, three more for the last 100.
    let spec = OutputSpec::vector(1, TaskKind::Count);
    let models = vec![("a".to_string(), spec.clone()), ("b".to_string(), spec)];
    let mut rng = StdRng::seed_from_u64(71);
    let samples: Samples = (0..500)
        .map(|n| {
            let a = rng.random_range(0..=10) as f32;
            let offset = if n < 400 { 1.0 } else { 3.0 };
            Sample::complete([
                OutputValue::Vector(vec![a]),
                OutputValue::Vector(vec![a + offset]),
            ])
        })
        .collect();
    let b = LinkBundle::train(&models, &samples, &TrainParams::default(), 0.2, 2, &|_| {}).unwrap();
    assert_eq!(
        (b.meta.train_samples, b.meta.validation_samples),
        (400, 100)
    );
    // Trained on the first block only, the link still counts one more...
    let OutputValue::Vector(p) = b
        .predict(1, &[(0, &OutputValue::Vector(vec![5.0]))])
        .unwrap()
        .value
    else {
        panic!("a count is a vector")
    };
    assert!((p[0] - 6.0).abs() < 0.5, "{p:?}");
    // ...and its validation score is measured on the last block, where it is wrong. A random
    // split would have scored it on frames like those it was trained on (about 0.8).
    let s = b.link_score(0, 1);
    assert!(s < 0.2, "validation score {s}");
    assert_eq!(b.link(0, 1).unwrap().validation_pairs, 100);
}

#[test]
fn single_source_linear_predictions_have_an_uncertainty() {
    let models = vec![
        ("a".to_string(), OutputSpec::vector(3, TaskKind::Regression)),
        ("b".to_string(), OutputSpec::vector(2, TaskKind::Regression)),
    ];
    let (train, _) = noisy_region_samples(800, 51);
    let b = LinkBundle::train(&models, &train, &TrainParams::default(), 0.2, 2, &|_| {}).unwrap();
    let (test, hard) = noisy_region_samples(400, 53);
    let unc: Vec<f64> = test
        .iter()
        .map(|s| {
            b.predict(1, &[(0, s[0].as_ref().unwrap())])
                .unwrap()
                .uncertainty
        })
        .collect();
    assert!(unc.iter().all(|u| u.is_finite() && *u >= 0.0));
    let mean = |want: bool| {
        let v: Vec<f64> = unc
            .iter()
            .zip(&hard)
            .filter(|(_, h)| **h == want)
            .map(|(u, _)| *u)
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    // One source: no spread between sources, yet frames in the noisy region (squared error
    // per dimension about 0.375 there, 0 elsewhere) read as uncertain, on that scale.
    let (h, e) = (mean(true), mean(false));
    eprintln!("mean uncertainty hard {h}, easy {e}");
    assert!(auc(&unc, &hard) > 0.8, "AUC {}", auc(&unc, &hard));
    assert!(h > 0.1 && h < 1.5, "hard {h}");
    assert!(h > 2.0 * e, "hard {h} easy {e}");
}

#[test]
fn refit_after_fine_tuning_follows_sources_whose_reliability_changed() {
    let (_, _, mut b) = train();
    assert!(b.link_score(1, 0) > b.link_score(2, 0) + 0.2);
    // The scene changes: source 2 becomes the reliable one, source 1 the noisy one.
    let (_, swapped) = class_data(400, 19, 2);
    let (fit_on, held_out) = b.split_in_time(&swapped);
    assert_eq!((fit_on.len(), held_out.len()), (300, 100));
    assert_eq!(
        held_out[0], swapped[300],
        "the held-out block is the newest"
    );
    b.fine_tune(fit_on, 5).unwrap();
    // Fine-tuning alone leaves the scores and the ensemble as trained on the old scene.
    assert!(b.link_score(1, 0) > b.link_score(2, 0) + 0.2);
    let stale = b.ensemble(0).unwrap().clone();
    b.refit(fit_on, held_out).unwrap();
    let (s1, s2) = (b.link_score(1, 0), b.link_score(2, 0));
    assert!(s2 > s1 + 0.2, "link scores after the refit: {s1} {s2}");
    assert_eq!(b.link(2, 0).unwrap().validation_pairs, 100);
    let e = b.ensemble(0).unwrap();
    assert_ne!(e, &stale);
    let weight = |source: usize| {
        let row = &e.logit_weights[e.sources.iter().position(|&s| s == source).unwrap()];
        row.iter().sum::<f32>() / row.len() as f32
    };
    assert!(weight(2) > weight(1), "{} {}", weight(2), weight(1));
    let both = b.ensemble_score(&[1, 2], 0);
    assert!(both >= s2 - 0.05, "ensemble {both}, reliable source {s2}");
    // The refit bundle keeps its new scores through a save and a load.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("refit.mlb");
    b.save(&path).unwrap();
    let c = LinkBundle::load(&path).unwrap();
    assert_eq!(c.ensemble_score(&[1, 2], 0), both);
    assert_eq!(c.link_score(2, 0), s2);
    // Samples that do not fit the models are refused, and change nothing.
    let short: Samples = vec![Sample::new(swapped[0].outputs[..2].to_vec())];
    assert!(b.refit(&short, held_out).is_err());
    assert_eq!(b.link_score(2, 0), s2);
}

/// Online retraining of the view links never trades them for links that learned from fewer
/// frames, keeps only frames whose views have the lengths the links read, and records what
/// they learned from in the stored form.
#[test]
fn view_links_are_trained_again_only_on_at_least_as_many_frames() {
    let (models, samples) = class_data(80, 5, 1);
    let p = TrainParams {
        epochs: 5,
        ..TrainParams::default()
    };
    let mut b = LinkBundle::train(&models, &samples[..40], &p, 0.25, 2, &|_| {}).unwrap();
    let heads: Vec<Vec<Vec<f32>>> = samples
        .iter()
        .map(|s| {
            s.outputs
                .iter()
                .map(|o| match o {
                    Some(OutputValue::Vector(h)) => h.clone(),
                    _ => unreachable!(),
                })
                .collect()
        })
        .collect();
    let views: Vec<Vec<Vec<f32>>> = heads
        .iter()
        .map(|f| f.iter().map(|h| squared_view(h)).collect())
        .collect();
    let frames = |range: std::ops::Range<usize>, short_every: Option<usize>| {
        range
            .map(|f| {
                (0..3)
                    .map(|m| mlink::link::view_links::ModelInput {
                        view: match short_every {
                            Some(e) if f % e == 0 => &views[f][m][..6],
                            _ => &views[f][m],
                        },
                        head: &heads[f][m],
                    })
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    // Without view links there is nothing to train again.
    assert_eq!(b.retrain_view_links(frames(0..60, None), &p), None);
    b.train_view_links(frames(0..40, None), &p);
    let first = b.view_links().unwrap().state();
    assert_eq!(first.frames, Some(40));
    // Fewer frames than the links learned from: the links held stay.
    assert_eq!(b.retrain_view_links(frames(40..70, None), &p), None);
    assert_eq!(b.view_links().unwrap().state(), first);
    // 50 frames of which every fifth has a short view: 40 are usable, as many as before.
    assert_eq!(b.retrain_view_links(frames(30..80, Some(5)), &p), Some(40));
    let second = b.view_links().unwrap();
    assert_eq!(second.trained_frames(), Some(40));
    assert_eq!(second.view_dims(), &[12, 12, 12]);
    assert_ne!(second.state(), first, "the links learned from other frames");
    // The count survives a save and load.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("links.mlb");
    b.save(&path).unwrap();
    let c = LinkBundle::load(&path).unwrap();
    assert_eq!(c.view_links().unwrap().trained_frames(), Some(40));
}
