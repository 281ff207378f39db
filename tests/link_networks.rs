//! Link networks: gradients against finite differences and against candle, and each
//! architecture learning a known mapping.

use candle_core::{Device, Tensor, Var};
use mlink::link::mlp::Mlp;
use mlink::link::net::{LinkNet, TrainParams};
use mlink::link::seq::SeqNet;
use mlink::output::{OutputSpec, OutputValue, TaskKind, evaluate};
use ndarray::Array2;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn mlp_loss(m: &Mlp, task: TaskKind, x: &Array2<f32>, t: &Array2<f32>) -> (f32, Vec<f32>) {
    let mut ws = m.workspace(x.nrows());
    let mut rng = StdRng::seed_from_u64(0);
    let l = m.batch_gradient(task, x.view(), t.view(), 0.0, &mut rng, &mut ws);
    (l, ws.into_grad())
}

#[test]
fn vec2vec_gradients_match_finite_differences_and_candle() {
    let mut rng = StdRng::seed_from_u64(3);
    let (i, h, o, b) = (5, 7, 4, 6);
    let m = Mlp::new(i, h, o, &mut rng);
    let x = Array2::from_shape_fn((b, i), |_| rng.random_range(-1.0..1.0f32));
    let mut t = Array2::from_shape_fn((b, o), |_| rng.random_range(0.0..1.0f32));
    for mut r in t.rows_mut() {
        let s: f32 = r.sum();
        r.mapv_inplace(|v| v / s);
    }
    for task in [
        TaskKind::SingleLabel,
        TaskKind::MultiLabel,
        TaskKind::Regression,
    ] {
        let (loss, g) = mlp_loss(&m, task, &x, &t);
        // Finite differences on a spread of parameters (f64 accumulation would be nicer, but a
        // central difference with h = 1e-2 is accurate enough for this small network).
        for p in (0..m.params.len()).step_by(5) {
            let mut mp = m.clone();
            mp.params[p] += 1e-3;
            let mut mm = m.clone();
            mm.params[p] -= 1e-3;
            let fd = (mlp_loss(&mp, task, &x, &t).0 - mlp_loss(&mm, task, &x, &t).0) / 2e-3;
            assert!(
                (fd - g[p]).abs() < 2e-3,
                "{task:?} param {p}: {} vs fd {fd}",
                g[p]
            );
        }
        // The same network and loss in candle give the same value and gradients.
        let dev = Device::Cpu;
        let pr = &m.params;
        let w1 =
            Var::from_tensor(&Tensor::from_slice(&pr[..i * h], (i, h), &dev).unwrap()).unwrap();
        let b1 =
            Var::from_tensor(&Tensor::from_slice(&pr[i * h..i * h + h], h, &dev).unwrap()).unwrap();
        let o2 = i * h + h;
        let w2 = Var::from_tensor(&Tensor::from_slice(&pr[o2..o2 + h * o], (h, o), &dev).unwrap())
            .unwrap();
        let b2 =
            Var::from_tensor(&Tensor::from_slice(&pr[o2 + h * o..], o, &dev).unwrap()).unwrap();
        let xt = Tensor::from_slice(x.as_slice().unwrap(), (b, i), &dev).unwrap();
        let tt = Tensor::from_slice(t.as_slice().unwrap(), (b, o), &dev).unwrap();
        let hid = xt
            .matmul(&w1)
            .unwrap()
            .broadcast_add(&b1)
            .unwrap()
            .relu()
            .unwrap();
        let z = hid.matmul(&w2).unwrap().broadcast_add(&b2).unwrap();
        let cl = mlink::link::seq::vector_loss_for_tests(task, &z, &tt).unwrap();
        let cv = cl.to_scalar::<f32>().unwrap();
        assert!(
            (cv - loss).abs() < 1e-4,
            "{task:?}: candle loss {cv} vs {loss}"
        );
        let grads = cl.backward().unwrap();
        let mut cg = Vec::new();
        for v in [&w1, &b1, &w2, &b2] {
            cg.extend(
                grads
                    .get(v)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
            );
        }
        for (k, (a, c)) in g.iter().zip(&cg).enumerate() {
            assert!((a - c).abs() < 1e-5, "{task:?} grad {k}: {a} vs candle {c}");
        }
    }
}

#[test]
fn sequence_network_gradients_match_finite_differences() {
    let mut rng = StdRng::seed_from_u64(5);
    let src = OutputSpec::sequence(6, 5, 0);
    let dst = OutputSpec::sequence(6, 5, 0);
    let vsrc = OutputSpec::vector(3, TaskKind::Count);
    let vdst = OutputSpec::vector(3, TaskKind::SingleLabel);
    let seqs = [vec![1, 2, 3, 0], vec![4, 5, 0], vec![2, 0]];
    let vecs = [
        vec![1.0, 0.0, 2.0],
        vec![0.5, 1.5, 0.0],
        vec![0.0, 0.0, 1.0],
    ];
    let s: Vec<OutputValue> = seqs
        .iter()
        .map(|t| OutputValue::Tokens(t.clone()))
        .collect();
    let v: Vec<OutputValue> = vecs
        .iter()
        .map(|t| OutputValue::Vector(t.clone()))
        .collect();
    let probs: Vec<OutputValue> = (0..3)
        .map(|k| {
            let mut p = vec![0.1; 3];
            p[k] = 0.8;
            OutputValue::Vector(p)
        })
        .collect();
    let sr: Vec<&OutputValue> = s.iter().collect();
    let vr: Vec<&OutputValue> = v.iter().collect();
    let pr: Vec<&OutputValue> = probs.iter().collect();
    for (a, b, x, t) in [
        (&src, &dst, &sr, &sr),
        (&vsrc, &dst, &vr, &sr),
        (&src, &vdst, &sr, &pr),
    ] {
        let net = SeqNet::new(a, b, 2, None, None, &mut rng).unwrap();
        let g = net.gradient(x, t).unwrap();
        let p0 = net.params();
        let shapes = net.param_shapes();
        let mut off = 0;
        for (name, shape) in shapes {
            let n: usize = shape.iter().product();
            for p in [off, off + n / 2, off + n - 1] {
                let mut q = p0.clone();
                q[p] += 1e-3;
                net.set_params(&q).unwrap();
                let lp = net.loss_value(x, t).unwrap();
                q[p] -= 2e-3;
                net.set_params(&q).unwrap();
                let lm = net.loss_value(x, t).unwrap();
                let fd = (lp - lm) / 2e-3;
                assert!(
                    (fd - g[p]).abs() < 3e-3 + 0.05 * g[p].abs(),
                    "{name}[{}]: analytic {} vs fd {fd}",
                    p - off,
                    g[p]
                );
            }
            off += n;
        }
        net.set_params(&p0).unwrap();
    }
}

fn params(epochs: usize) -> TrainParams {
    TrainParams {
        epochs,
        ..TrainParams::default()
    }
}

#[test]
fn vec2vec_learns_a_permutation_of_one_hot_vectors() {
    let n = 8;
    let perm = [3, 7, 0, 5, 1, 6, 2, 4];
    let spec = OutputSpec::vector(n, TaskKind::SingleLabel);
    let mut rng = StdRng::seed_from_u64(1);
    let mut xs = Vec::new();
    let mut ts = Vec::new();
    for s in 0..400 {
        let c = s % n;
        let mut x = vec![0.0; n];
        x[c] = 1.0;
        let mut t = vec![0.02; n];
        t[perm[c]] = 1.0 - 0.02 * (n - 1) as f32;
        xs.push(OutputValue::Vector(x));
        ts.push(OutputValue::Vector(t));
    }
    let x: Vec<&OutputValue> = xs.iter().collect();
    let t: Vec<&OutputValue> = ts.iter().collect();
    let mut net = LinkNet::new(&spec, &spec, &params(30), &x, &t, &mut rng).unwrap();
    net.fit(&x, &t, &params(30), &mut rng).unwrap();
    let preds: Vec<OutputValue> = xs.iter().map(|v| net.predict(v).unwrap()).collect();
    let acc = evaluate(&spec, preds.iter().zip(&ts)).unwrap();
    assert!(acc >= 0.99, "accuracy {acc}");
}

#[test]
fn vec2vec_learns_a_linear_regression() {
    let mut rng = StdRng::seed_from_u64(2);
    let src = OutputSpec::vector(4, TaskKind::Regression);
    let dst = OutputSpec::vector(2, TaskKind::Regression);
    let mut xs = Vec::new();
    let mut ts = Vec::new();
    for _ in 0..600 {
        let x: Vec<f32> = (0..4).map(|_| rng.random_range(-2.0..2.0)).collect();
        let t = vec![3.0 * x[0] - x[1] + 10.0, 0.5 * x[2] + 2.0 * x[3]];
        xs.push(OutputValue::Vector(x));
        ts.push(OutputValue::Vector(t));
    }
    let x: Vec<&OutputValue> = xs.iter().collect();
    let t: Vec<&OutputValue> = ts.iter().collect();
    let mut p = params(60);
    p.dropout = 0.0;
    let mut net = LinkNet::new(&src, &dst, &p, &x, &t, &mut rng).unwrap();
    net.fit(&x, &t, &p, &mut rng).unwrap();
    let mut mae = 0.0;
    for (a, b) in xs.iter().zip(&ts) {
        let (OutputValue::Vector(pv), OutputValue::Vector(tv)) = (net.predict(a).unwrap(), b)
        else {
            panic!()
        };
        mae += pv.iter().zip(tv).map(|(u, v)| (u - v).abs()).sum::<f32>() / 2.0;
    }
    mae /= xs.len() as f32;
    // Targets span about +-8 around their means; a mean error under 0.25 is a good fit.
    assert!(mae < 0.25, "MAE {mae}");
}

#[test]
fn seq2vec_learns_to_count_a_token() {
    let mut rng = StdRng::seed_from_u64(4);
    let src = OutputSpec::sequence(5, 9, 0);
    let dst = OutputSpec::vector(1, TaskKind::Count);
    let mut xs = Vec::new();
    let mut ts = Vec::new();
    for _ in 0..400 {
        let len = rng.random_range(1..8);
        let mut s: Vec<u32> = (0..len).map(|_| rng.random_range(1..5)).collect();
        let count = s.iter().filter(|&&t| t == 2).count();
        s.push(0);
        xs.push(OutputValue::Tokens(s));
        ts.push(OutputValue::Vector(vec![count as f32]));
    }
    let x: Vec<&OutputValue> = xs.iter().collect();
    let t: Vec<&OutputValue> = ts.iter().collect();
    let p = params(25);
    let mut net = LinkNet::new(&src, &dst, &p, &x, &t, &mut rng).unwrap();
    net.fit(&x[..300], &t[..300], &p, &mut rng).unwrap();
    let preds: Vec<OutputValue> = xs[300..].iter().map(|v| net.predict(v).unwrap()).collect();
    let acc = evaluate(&dst, preds.iter().zip(&ts[300..])).unwrap();
    assert!(acc >= 0.9, "held-out count accuracy {acc}");
}

/// The candle-free seq2vec inference computes what candle computes, after training, for
/// count (standardised linear) and class targets, and again after new parameters are set.
#[test]
fn seq2vec_fast_inference_equals_candle() {
    let mut rng = StdRng::seed_from_u64(41);
    let src = OutputSpec::sequence(50, 24, 0);
    for dst in [
        OutputSpec::vector(1, TaskKind::Count),
        OutputSpec::vector(80, TaskKind::SingleLabel),
    ] {
        let len = match dst.form {
            mlink::output::OutputForm::Vector { len } => len,
            _ => unreachable!(),
        };
        let xs: Vec<OutputValue> = (0..64)
            .map(|_| {
                let n = rng.random_range(1..23);
                OutputValue::Tokens((0..n).map(|_| rng.random_range(1..50)).collect())
            })
            .collect();
        let ts: Vec<OutputValue> = (0..64)
            .map(|_| OutputValue::Vector((0..len).map(|_| rng.random_range(0.0..3.0)).collect()))
            .collect();
        let x: Vec<&OutputValue> = xs.iter().collect();
        let t: Vec<&OutputValue> = ts.iter().collect();
        let p = params(2);
        let mut net = LinkNet::new(&src, &dst, &p, &x, &t, &mut rng).unwrap();
        net.fit(&x, &t, &p, &mut rng).unwrap();
        let LinkNet::Seq(seq) = &net else {
            panic!("seq2vec is a sequence network")
        };
        let compare = |seq: &SeqNet| {
            let fast = seq.logits(&x).unwrap();
            let slow = seq.candle_logits(&x).unwrap();
            let mut worst = 0f32;
            for (f, s) in fast.iter().zip(&slow) {
                assert_eq!(f.len(), len);
                for (a, b) in f.iter().zip(s) {
                    worst = worst.max((a - b).abs());
                }
            }
            assert!(worst <= 1e-5, "{dst:?}: fast and candle differ by {worst}");
        };
        compare(seq);
        let shifted: Vec<f32> = seq
            .params()
            .iter()
            .map(|v| v * 0.9 + rng.random_range(-0.05..0.05))
            .collect();
        seq.set_params(&shifted).unwrap();
        compare(seq);
        // An input outside the vocabulary is an error, not a panic.
        assert!(seq.logits(&[&OutputValue::Tokens(vec![77, 0])]).is_err());
    }
}

fn wer_of(net: &LinkNet, spec: &OutputSpec, xs: &[OutputValue], ts: &[OutputValue]) -> f64 {
    let preds: Vec<OutputValue> = xs.iter().map(|v| net.predict(v).unwrap()).collect();
    1.0 - evaluate(spec, preds.iter().zip(ts)).unwrap()
}

#[test]
fn seq2seq_learns_to_reverse_and_vec2seq_to_copy() {
    let mut rng = StdRng::seed_from_u64(6);
    let spec = OutputSpec::sequence(6, 5, 0);
    let mut xs = Vec::new();
    let mut rev = Vec::new();
    let mut multi_hot = Vec::new();
    for _ in 0..300 {
        let len = rng.random_range(1..4);
        let s: Vec<u32> = (0..len).map(|_| rng.random_range(1..6)).collect();
        let mut r = s.clone();
        r.reverse();
        let mut v = vec![0.0; 5 * 3];
        for (k, &t) in s.iter().enumerate() {
            v[k * 5 + t as usize - 1] = 1.0;
        }
        let mut with_end = s.clone();
        with_end.push(0);
        r.push(0);
        xs.push(OutputValue::Tokens(with_end));
        rev.push(OutputValue::Tokens(r));
        multi_hot.push(OutputValue::Vector(v));
    }
    let p = params(30);
    let x: Vec<&OutputValue> = xs.iter().collect();
    let t: Vec<&OutputValue> = rev.iter().collect();
    let mut net = LinkNet::new(&spec, &spec, &p, &x, &t, &mut rng).unwrap();
    net.fit(&x[..240], &t[..240], &p, &mut rng).unwrap();
    let w = wer_of(&net, &spec, &xs[240..], &rev[240..]);
    assert!(w <= 0.05, "seq2seq reversal WER {w}");

    let vspec = OutputSpec::vector(15, TaskKind::MultiLabel);
    let v: Vec<&OutputValue> = multi_hot.iter().collect();
    let mut net = LinkNet::new(&vspec, &spec, &p, &v, &x, &mut rng).unwrap();
    net.fit(&v[..240], &x[..240], &p, &mut rng).unwrap();
    let w = wer_of(&net, &spec, &multi_hot[240..], &xs[240..]);
    assert!(w <= 0.05, "vec2seq copy WER {w}");
}
