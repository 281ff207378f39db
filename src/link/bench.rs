//! The link speed figures shared by `benches/links.rs` and `mlink bench links`: the workloads
//! are built here once so both measure the same thing.

use super::choose::{Candidate, Chosen, LinkData, choose};
use super::net::{LinkNet, TrainParams};
use super::{LinkBundle, Sample};
use crate::output::{OutputSpec, OutputValue, TaskKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn probs(n: usize, rng: &mut StdRng) -> OutputValue {
    let mut v: Vec<f32> = (0..n).map(|_| rng.random_range(0.0..1.0)).collect();
    let s: f32 = v.iter().sum();
    v.iter_mut().for_each(|x| *x /= s);
    OutputValue::Vector(v)
}

/// 800 samples of an 80 -> 80 single-label mapping (the paper's 80-160-80 vec2vec shape).
pub fn vec2vec_workload() -> (OutputSpec, Vec<OutputValue>, Vec<OutputValue>) {
    let mut rng = StdRng::seed_from_u64(1);
    let spec = OutputSpec::vector(80, TaskKind::SingleLabel);
    let xs: Vec<OutputValue> = (0..800).map(|_| probs(80, &mut rng)).collect();
    let ts: Vec<OutputValue> = (0..800).map(|_| probs(80, &mut rng)).collect();
    (spec, xs, ts)
}

/// Trains the 80-160-80 vec2vec link for `epochs` epochs, batch 32.
pub fn train_vec2vec(epochs: usize) -> LinkNet {
    let (spec, xs, ts) = vec2vec_workload();
    let x: Vec<&OutputValue> = xs.iter().collect();
    let t: Vec<&OutputValue> = ts.iter().collect();
    let p = TrainParams {
        epochs,
        ..TrainParams::default()
    };
    let mut rng = StdRng::seed_from_u64(2);
    let mut net = LinkNet::new(&spec, &spec, &p, &x, &t, &mut rng).expect("vector specs");
    net.fit(&x, &t, &p, &mut rng).expect("vector data");
    net
}

/// A bundle of seven 80-class models (one target, six sources), trained briefly, and one frame
/// of the six sources' outputs.
pub fn six_source_bundle() -> (LinkBundle, Vec<(usize, OutputValue)>) {
    let mut rng = StdRng::seed_from_u64(3);
    let spec = OutputSpec::vector(80, TaskKind::SingleLabel);
    let models: Vec<(String, OutputSpec)> =
        (0..7).map(|i| (format!("m{i}"), spec.clone())).collect();
    let samples: Vec<Sample> = (0..64)
        .map(|_| Sample::complete((0..7).map(|_| probs(80, &mut rng))))
        .collect();
    let p = TrainParams {
        epochs: 1,
        ..TrainParams::default()
    };
    let b = LinkBundle::train(&models, &samples, &p, 0.25, 1, &|_| {}).expect("bundle");
    let active = (1..7).map(|i| (i, probs(80, &mut rng))).collect();
    (b, active)
}

/// A seq2vec link (vocabulary 50 -> 80 classes), briefly trained, and a 20-token input.
pub fn seq2vec_link() -> (LinkNet, OutputValue) {
    let mut rng = StdRng::seed_from_u64(4);
    let src = OutputSpec::sequence(50, 24, 0);
    let dst = OutputSpec::vector(80, TaskKind::SingleLabel);
    let xs: Vec<OutputValue> = (0..64)
        .map(|_| OutputValue::Tokens((0..20).map(|_| rng.random_range(1..50)).collect()))
        .collect();
    let ts: Vec<OutputValue> = (0..64).map(|_| probs(80, &mut rng)).collect();
    let x: Vec<&OutputValue> = xs.iter().collect();
    let t: Vec<&OutputValue> = ts.iter().collect();
    let p = TrainParams {
        epochs: 1,
        ..TrainParams::default()
    };
    let mut net = LinkNet::new(&src, &dst, &p, &x, &t, &mut rng).expect("specs");
    net.fit(&x, &t, &p, &mut rng).expect("data");
    let input = OutputValue::Tokens((0..20).map(|k| 1 + (k % 49) as u32).collect());
    (net, input)
}

/// The training pairs of one link into an ImageNet-like classifier on a short clip: 80
/// consecutive frames of a 40-wide source view and a one-long head, and a 1,000-class label
/// target that holds 5 classes (which one follows the view).
pub struct WideLabelLink {
    pub view: Vec<Vec<f32>>,
    pub head: Vec<Vec<f32>>,
    pub target: Vec<Vec<f32>>,
    pub spec: OutputSpec,
}

pub fn wide_label_link() -> WideLabelLink {
    let mut rng = StdRng::seed_from_u64(5);
    let classes = [3usize, 140, 409, 611, 930];
    let mut view = Vec::new();
    let mut head = Vec::new();
    let mut target = Vec::new();
    for _ in 0..80 {
        let c = rng.random_range(0..classes.len());
        let v: Vec<f32> = (0..40)
            .map(|d| if d % classes.len() == c { 1.0 } else { 0.0 } + rng.random_range(0.0..0.3))
            .collect();
        head.push(vec![c as f32]);
        view.push(v);
        let mut t = vec![0.0; 1000];
        t[classes[c]] = 1.0;
        target.push(t);
    }
    WideLabelLink {
        view,
        head,
        target,
        spec: OutputSpec::vector(1000, TaskKind::SingleLabel),
    }
}

/// The learner choice for [`wide_label_link`] with every candidate (each trained before the
/// held-out block, the tie-break blocks and the winner again on all pairs).
pub fn choose_wide_label(w: &WideLabelLink) -> Option<Chosen> {
    let data = LinkData {
        view: w.view.iter().map(Vec::as_slice).collect(),
        head: w.head.iter().map(Vec::as_slice).collect(),
        target: w.target.iter().map(Vec::as_slice).collect(),
    };
    choose(&data, &w.spec, &TrainParams::default(), &Candidate::all())
}
