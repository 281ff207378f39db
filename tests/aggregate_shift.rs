//! Algorithm 1 end to end on a synthetic domain shift: three edges train a linear link
//! y = w·x by local gradient steps on their own domains and aggregate it over HTTP; the global
//! link does better on an unseen target domain than a link trained on one edge's data alone.
//!
//! Each source domain excites mostly one direction of the input space (a camera that only
//! sees part of the scene's variety), the target domain all of them; the relation between
//! the two models' outputs (w*) is the same everywhere, as for a link between black-box models.

mod aggregate_support;

use aggregate_support::*;
use mlink::adapt::aggregate::{LocalUpdate, run_round};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};
use std::time::Duration;

const D: usize = 3;
const W_TRUE: [f32; D] = [1.5, -2.0, 0.75];
const ROUNDS: u64 = 12;
const LOCAL_STEPS: usize = 5;
const LR: f32 = 0.1;
const LINK: &str = "synthetic->target";

/// Samples whose input varies strongly along `scale[k]` and little along the others.
fn domain(seed: u64, scale: [f32; D], n: usize) -> Vec<([f32; D], f32)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let normal = Normal::new(0.0f32, 1.0).unwrap();
    let noise = Normal::new(0.0f32, 0.05).unwrap();
    (0..n)
        .map(|_| {
            let mut x = [0.0; D];
            for k in 0..D {
                x[k] = normal.sample(&mut rng) * scale[k];
            }
            let y = dot(&W_TRUE, &x) + noise.sample(&mut rng);
            (x, y)
        })
        .collect()
}

fn dot(w: &[f32], x: &[f32; D]) -> f32 {
    w.iter().zip(x).map(|(a, b)| a * b).sum()
}

fn mse(w: &[f32], data: &[([f32; D], f32)]) -> f32 {
    data.iter()
        .map(|(x, y)| (dot(w, x) - y).powi(2))
        .sum::<f32>()
        / data.len() as f32
}

/// Full-batch gradient steps on the squared error from `w`.
fn train(w: &[f32], data: &[([f32; D], f32)], steps: usize) -> Vec<f32> {
    let mut w = w.to_vec();
    for _ in 0..steps {
        let mut grad = [0.0f32; D];
        for (x, y) in data {
            let err = dot(&w, x) - y;
            for k in 0..D {
                grad[k] += 2.0 * err * x[k] / data.len() as f32;
            }
        }
        for k in 0..D {
            w[k] -= LR * grad[k];
        }
    }
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_link_beats_a_local_one_on_a_shifted_target_domain() {
    tokio::time::timeout(TEST_LIMIT, async {
        let sources: Vec<_> = (0..D)
            .map(|k| {
                let mut scale = [0.1; D];
                scale[k] = 1.0;
                domain(k as u64 + 1, scale, 200)
            })
            .collect();
        let target = domain(99, [1.0; D], 500);

        let dir = tempfile::tempdir().unwrap();
        let setup = Setup::new(dir.path(), D, linear_spec(D), vec![0.0; D]);
        let server = setup.start().await;

        // Every edge runs the rounds concurrently, as independent processes would.
        let mut edges = Vec::new();
        for (k, data) in sources.iter().cloned().enumerate() {
            let c = client(&server, k);
            edges.push(tokio::spawn(async move {
                for round in 0..ROUNDS {
                    c.wait_for_round(LINK, round, Duration::from_millis(10), Duration::from_secs(30))
                        .await
                        .unwrap();
                    let (g, _) = run_round(&c, LINK, |g| {
                        let local = train(&g.params.0, &data, LOCAL_STEPS);
                        let delta = local.iter().zip(&g.params.0).map(|(l, w)| l - w).collect();
                        Ok::<_, std::io::Error>(LocalUpdate { delta, n_samples: Some(data.len() as u64) })
                    })
                    .await
                    .unwrap();
                    assert_eq!(g.round, round);
                }
            }));
        }
        for e in edges {
            e.await.unwrap();
        }
        let global = client(&server, 0).pull(LINK).await.unwrap();
        assert_eq!(global.round, ROUNDS);
        server.stop().await.unwrap();

        // The same local work (ROUNDS x LOCAL_STEPS steps) on edge 0's data alone.
        let local_only = train(&[0.0; D], &sources[0], ROUNDS as usize * LOCAL_STEPS);
        let initial = mse(&[0.0; D], &target);
        let global_err = mse(&global.params.0, &target);
        let local_err = mse(&local_only, &target);
        let local_on_own = mse(&local_only, &sources[0]);
        eprintln!(
            "target MSE: initial {initial:.4}, local-only (edge 0) {local_err:.4}, global {global_err:.4}; local-only on its own domain {local_on_own:.4}"
        );
        assert!(local_on_own < 0.1 * mse(&[0.0; D], &sources[0]), "the local link did learn its own domain");
        assert!(global_err < 0.5 * local_err, "global {global_err} vs local-only {local_err}");
        assert!(global_err < 0.1 * initial, "global {global_err} vs initial {initial}");
    })
    .await
    .unwrap();
}
