//! `mlink bench overheads`: the paper's Fig. 11 setup on this machine. Concurrent link
//! trainings and predictions (1, 2, 5, 10, 20 at once by default) on links whose input and
//! output lengths are drawn from 1 to 100, the time per training and the total latency of
//! one million predictions; the memory of a loaded link bundle per link; the bytes one
//! federated round moves per link (the link's parameters down and its update up, f32).

use crate::link::LinkBundle;
use crate::link::net::{LinkNet, TrainParams};
use crate::output::{OutputSpec, OutputValue, TaskKind};
use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Concurrent trainings and predictions to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2, 5, 10, 20])]
    pub concurrency: Vec<usize>,
    /// Samples each link trains on.
    #[arg(long, default_value_t = 200)]
    pub samples: usize,
    /// Epochs of each training (the paper's links train 100).
    #[arg(long, default_value_t = 100)]
    pub epochs: usize,
    /// Predictions in all, shared by the concurrent predictors.
    #[arg(long, default_value_t = 1_000_000)]
    pub predictions: usize,
    /// A link bundle to load for the memory figure (e.g. from `mlink train`).
    #[arg(long, value_name = "FILE")]
    pub bundle: Option<PathBuf>,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One link workload: random lengths from 1 to 100, random inputs and targets.
fn workload(
    seed: u64,
    samples: usize,
) -> (OutputSpec, OutputSpec, Vec<OutputValue>, Vec<OutputValue>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (n_in, n_out) = (rng.random_range(1..=100), rng.random_range(1..=100));
    let src = OutputSpec::vector(n_in, TaskKind::Regression);
    let dst = OutputSpec::vector(n_out, TaskKind::Regression);
    let mut draw =
        |n: usize| OutputValue::Vector((0..n).map(|_| rng.random_range(0.0..1.0)).collect());
    let xs = (0..samples).map(|_| draw(n_in)).collect();
    let ts = (0..samples).map(|_| draw(n_out)).collect();
    (src, dst, xs, ts)
}

fn train_one(
    seed: u64,
    samples: usize,
    epochs: usize,
) -> anyhow::Result<(LinkNet, Vec<OutputValue>)> {
    let (src, dst, xs, ts) = workload(seed, samples);
    let x: Vec<&OutputValue> = xs.iter().collect();
    let t: Vec<&OutputValue> = ts.iter().collect();
    let p = TrainParams {
        epochs,
        seed,
        ..TrainParams::default()
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let mut net = LinkNet::new(&src, &dst, &p, &x, &t, &mut rng)?;
    net.fit(&x, &t, &p, &mut rng)?;
    Ok((net, xs))
}

/// Resident memory of this process in kB (Linux), for the bundle figure.
fn rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[derive(serde::Serialize)]
struct Row {
    concurrent: usize,
    /// Wall time of the whole batch of trainings.
    train_wall_s: f64,
    /// Wall time per training: the batch's wall time over the trainings in it.
    train_s_per_training: f64,
    /// Mean wall time of one training thread from its start to its end.
    train_s_per_thread: f64,
    /// Wall time of all the predictions, shared by the predictors.
    predict_wall_s: f64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.concurrency.contains(&0) || args.samples == 0 || args.epochs == 0 {
        anyhow::bail!("concurrency, samples and epochs must be at least 1");
    }
    let mut rows = Vec::new();
    for &c in &args.concurrency {
        let start = Instant::now();
        let results: Vec<anyhow::Result<(f64, LinkNet, Vec<OutputValue>)>> =
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..c)
                    .map(|i| {
                        let (samples, epochs) = (args.samples, args.epochs);
                        s.spawn(move || {
                            let t = Instant::now();
                            let (net, xs) = train_one(1000 * c as u64 + i as u64, samples, epochs)?;
                            Ok((t.elapsed().as_secs_f64(), net, xs))
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err(anyhow::anyhow!("a training thread panicked")))
                    })
                    .collect()
            });
        let train_wall = start.elapsed().as_secs_f64();
        let trained: Vec<(f64, LinkNet, Vec<OutputValue>)> =
            results.into_iter().collect::<anyhow::Result<_>>()?;
        let per_thread = trained.iter().map(|r| r.0).sum::<f64>() / c as f64;
        // The predictions: each trained link predicts its share of the total on its inputs.
        let share = args.predictions.div_ceil(c);
        let start = Instant::now();
        std::thread::scope(|s| {
            for (_, net, xs) in &trained {
                s.spawn(move || {
                    for n in 0..share {
                        std::hint::black_box(net.predict(&xs[n % xs.len()]).ok());
                    }
                });
            }
        });
        let predict_wall = start.elapsed().as_secs_f64();
        let row = Row {
            concurrent: c,
            train_wall_s: train_wall,
            train_s_per_training: train_wall / c as f64,
            train_s_per_thread: per_thread,
            predict_wall_s: predict_wall,
        };
        if !args.json {
            println!(
                "{c:>3} concurrent: training {:.2} s per link ({:.2} s a thread, {:.2} s in all); {} predictions in {:.2} s",
                row.train_s_per_training,
                row.train_s_per_thread,
                row.train_wall_s,
                share * c,
                row.predict_wall_s
            );
        }
        rows.push(row);
    }
    // A link's parameters, as federated averaging exchanges them: one round sends the global
    // link down and the edge's update up.
    let (net, _) = train_one(7, 8, 1)?;
    let params = net.params().len();
    let round_bytes = 2 * params * 4;
    let mut bundle_figure = None;
    if let Some(path) = &args.bundle {
        let before = rss_kb();
        let bundle =
            LinkBundle::load(path).with_context(|| format!("loading {}", path.display()))?;
        let after = rss_kb();
        let k = bundle.model_count();
        let links = (0..k)
            .flat_map(|i| (0..k).map(move |j| (i, j)))
            .filter(|&(i, j)| i != j && bundle.link(i, j).is_some())
            .count();
        let param_bytes: usize = (0..k)
            .flat_map(|i| (0..k).map(move |j| (i, j)))
            .filter(|&(i, j)| i != j)
            .filter_map(|(i, j)| bundle.link_params(i, j).ok())
            .map(|p| p.len() * 4)
            .sum();
        // What the links that serve hold: the view links wherever the bundle has them.
        let serving_bytes: usize = (0..k)
            .flat_map(|i| (0..k).map(move |j| (i, j)))
            .filter(|&(i, j)| i != j)
            .filter_map(|(i, j)| bundle.serving_link_parameters(i, j))
            .map(|n| n * 4)
            .sum();
        let rss = match (before, after) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        bundle_figure = Some((links, param_bytes, serving_bytes, rss));
        std::hint::black_box(&bundle);
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "profile": if cfg!(debug_assertions) { "dev" } else { "release" },
                "samples": args.samples,
                "epochs": args.epochs,
                "rows": rows,
                "federated_round_bytes_per_link_example": { "params": params, "bytes": round_bytes },
                "bundle": bundle_figure.map(|(links, bytes, serving, rss)| serde_json::json!({
                    "links": links, "param_bytes": bytes, "serving_param_bytes": serving,
                    "rss_growth_kb": rss,
                })),
            })
        );
    } else {
        println!(
            "one federated round of a link with {params} parameters moves {round_bytes} bytes (down and up)"
        );
        if let Some((links, bytes, serving, rss)) = bundle_figure {
            println!(
                "bundle: {links} links, {:.1} kB of parameters in the paper's links ({:.1} kB a link), \
                 {:.1} kB in the links that serve ({:.1} kB a link), resident memory grew {} on load",
                bytes as f64 / 1e3,
                bytes as f64 / 1e3 / links.max(1) as f64,
                serving as f64 / 1e3,
                serving as f64 / 1e3 / links.max(1) as f64,
                rss.map_or("(unknown)".to_string(), |kb| format!("{kb} kB"))
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
