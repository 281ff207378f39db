//! Local-global and cross-task fusion of links (paper sections 4.3 and 6.5).

use mlink::adapt::fusion::{Fusion, FusionParams, FusionSample};
use mlink::link::{LinkNet, TrainParams};
use mlink::output::{OutputSpec, OutputValue, TaskKind};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};

fn params(epochs: usize) -> TrainParams {
    TrainParams {
        epochs,
        batch_size: 16,
        learning_rate: 0.01,
        hidden_factor: 2,
        dropout: 0.0,
        seed: 1,
    }
}

/// Samples `x ~ N(0, I_2)` with `y = 1.5 x0 - x1 + offset` (plus a little noise).
fn domain(seed: u64, n: usize, offset: f32) -> Vec<(OutputValue, OutputValue)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let g = Normal::new(0.0f32, 1.0).unwrap();
    let noise = Normal::new(0.0f32, 0.05).unwrap();
    (0..n)
        .map(|_| {
            let x = [g.sample(&mut rng), g.sample(&mut rng)];
            let y = 1.5 * x[0] - x[1] + offset + noise.sample(&mut rng);
            (
                OutputValue::Vector(x.to_vec()),
                OutputValue::Vector(vec![y]),
            )
        })
        .collect()
}

fn train(
    src: &OutputSpec,
    dst: &OutputSpec,
    data: &[(OutputValue, OutputValue)],
    epochs: usize,
) -> LinkNet {
    let x: Vec<&OutputValue> = data.iter().map(|p| &p.0).collect();
    let t: Vec<&OutputValue> = data.iter().map(|p| &p.1).collect();
    let mut rng = StdRng::seed_from_u64(5);
    let mut net = LinkNet::new(src, dst, &params(epochs), &x, &t, &mut rng).unwrap();
    net.fit(&x, &t, &params(epochs), &mut rng).unwrap();
    net
}

fn mean_score(
    spec: &OutputSpec,
    pred: impl Fn(&OutputValue) -> OutputValue,
    test: &[(OutputValue, OutputValue)],
) -> f64 {
    mlink::output::mean_score(spec, test.iter().map(|(x, y)| (pred(x), y)))
        .expect("test samples")
        .score
}

#[test]
fn local_global_fusion_does_at_least_as_well_as_the_better_link() {
    let src = OutputSpec::vector(2, TaskKind::Regression);
    let dst = OutputSpec::vector(1, TaskKind::Regression);
    // The global link learned another site where the target reads 2 units higher.
    let global = train(&src, &dst, &domain(1, 600, 2.0), 60);
    let local_data = domain(2, 40, 0.0);
    let local = train(&src, &dst, &local_data, 150);
    let test = domain(3, 400, 0.0);
    let members = [&local, &global];
    let fit: Vec<FusionSample<'_>> = local_data
        .iter()
        .map(|(x, y)| FusionSample {
            inputs: vec![Some(x), Some(x)],
            target: y,
        })
        .collect();
    let fusion = Fusion::fit(&dst, &members, &fit, &FusionParams::default()).unwrap();
    let s_local = mean_score(&dst, |x| local.predict(x).unwrap(), &test);
    let s_global = mean_score(&dst, |x| global.predict(x).unwrap(), &test);
    let s_fused = mean_score(
        &dst,
        |x| fusion.predict(&members, &[Some(x), Some(x)]).unwrap(),
        &test,
    );
    let w = fusion.mean_weights();
    eprintln!(
        "local {s_local:.4}, global {s_global:.4}, fused {s_fused:.4}, weights {w:?}, selected {:?}",
        fusion.selected
    );
    assert!(
        s_global < s_local,
        "the shifted global link is the worse one here"
    );
    assert!(
        s_fused >= s_local.max(s_global) - 1e-9,
        "fused {s_fused} vs best {}",
        s_local.max(s_global)
    );
    assert!(w[0] > w[1], "the local link carries the weight: {w:?}");
    // A member without input is left out and the other one used alone.
    let (x, _) = &test[0];
    assert_eq!(
        fusion.predict(&members, &[Some(x), None]).unwrap(),
        local.predict(x).unwrap()
    );
}

#[test]
fn cross_task_fusion_beats_each_single_source_link() {
    // The target counts people in two zones; one source is a counter of zone A, the other a
    // model of another task that sees zone B (its occupancy and a derived score). Each source
    // alone misses half of the target's variation.
    let a_spec = OutputSpec::vector(1, TaskKind::Count);
    let b_spec = OutputSpec::vector(2, TaskKind::Regression);
    let dst = OutputSpec::vector(1, TaskKind::Regression);
    let mut rng = StdRng::seed_from_u64(11);
    let g = Normal::new(0.0f32, 1.0).unwrap();
    let make = |n: usize, rng: &mut StdRng| -> Vec<(OutputValue, OutputValue, OutputValue)> {
        (0..n)
            .map(|_| {
                let (a, b) = (3.0 + g.sample(rng), 3.0 + g.sample(rng));
                (
                    OutputValue::Vector(vec![a]),
                    OutputValue::Vector(vec![b, -b]),
                    OutputValue::Vector(vec![a + b]),
                )
            })
            .collect()
    };
    let train_data = make(300, &mut rng);
    let test = make(300, &mut rng);
    let pairs = |k: usize| -> Vec<(OutputValue, OutputValue)> {
        train_data
            .iter()
            .map(|s| (if k == 0 { s.0.clone() } else { s.1.clone() }, s.2.clone()))
            .collect()
    };
    let from_a = train(&a_spec, &dst, &pairs(0), 60);
    let from_b = train(&b_spec, &dst, &pairs(1), 60);
    let members = [&from_a, &from_b];
    let fit: Vec<FusionSample<'_>> = train_data
        .iter()
        .map(|(a, b, y)| FusionSample {
            inputs: vec![Some(a), Some(b)],
            target: y,
        })
        .collect();
    let fusion = Fusion::fit(&dst, &members, &fit, &FusionParams::default()).unwrap();
    let mse = |f: &dyn Fn(&OutputValue, &OutputValue) -> OutputValue| {
        test.iter()
            .map(|(a, b, y)| {
                let (OutputValue::Vector(p), OutputValue::Vector(e)) = (f(a, b), y) else {
                    panic!()
                };
                (p[0] - e[0]).powi(2) as f64
            })
            .sum::<f64>()
            / test.len() as f64
    };
    let e_a = mse(&|a, _| from_a.predict(a).unwrap());
    let e_b = mse(&|_, b| from_b.predict(b).unwrap());
    let e_fused = mse(&|a, b| fusion.predict(&members, &[Some(a), Some(b)]).unwrap());
    eprintln!(
        "MSE: from A {e_a:.4}, from B {e_b:.4}, fused {e_fused:.4}, weights {:?}",
        fusion.mean_weights()
    );
    assert!(fusion.selected.is_none(), "no single source dominates");
    assert!(
        e_fused < 0.8 * e_a.min(e_b),
        "fused {e_fused} vs {e_a}, {e_b}"
    );
}

#[test]
fn fusion_needs_a_vector_target_and_two_members() {
    let src = OutputSpec::vector(2, TaskKind::Regression);
    let dst = OutputSpec::vector(1, TaskKind::Regression);
    let data = domain(1, 20, 0.0);
    let net = train(&src, &dst, &data, 1);
    let fit: Vec<FusionSample<'_>> = data
        .iter()
        .map(|(x, y)| FusionSample {
            inputs: vec![Some(x)],
            target: y,
        })
        .collect();
    assert!(
        Fusion::fit(&dst, &[&net], &fit, &FusionParams::default())
            .unwrap_err()
            .to_string()
            .contains("at least two")
    );
    let seq = OutputSpec::sequence(10, 5, 0);
    assert!(
        Fusion::fit(&seq, &[&net, &net], &fit, &FusionParams::default())
            .unwrap_err()
            .to_string()
            .contains("vector target")
    );
    assert!(
        Fusion::fit(&dst, &[&net, &net], &fit, &FusionParams::default())
            .unwrap_err()
            .to_string()
            .contains("1 inputs for 2")
    );
}
