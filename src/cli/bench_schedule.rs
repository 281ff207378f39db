//! `mlink bench schedule`: how long one selection takes for 10, 20 and 100 models.

use crate::config::SelectionPolicy;
use crate::schedule::simulate::{Instance, PAPER_ENSEMBLE_GAIN, ScoreDist};
use crate::schedule::{MAX_OPTIMAL_MODELS, select};
use rand::{SeedableRng, rngs::StdRng};
use serde::Serialize;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
    /// Model counts to time.
    #[arg(long, value_delimiter = ',', default_values_t = [10usize, 20, 100])]
    pub models: Vec<usize>,
    /// Random instances per model count (each timed at the half-way budget).
    #[arg(long, default_value_t = 20)]
    pub instances: usize,
    /// Minimum time spent per instance and policy, in milliseconds.
    #[arg(long, default_value_t = 50)]
    pub min_ms: u64,
}

#[derive(Serialize)]
struct Row {
    models: usize,
    policy: SelectionPolicy,
    /// Median over instances of the mean time of one selection.
    median_us: f64,
    max_us: f64,
    mean_objective: f64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.instances > 0, "--instances must be at least 1");
    let mut rows = Vec::new();
    let policies = [
        SelectionPolicy::Mlink,
        SelectionPolicy::Gain,
        SelectionPolicy::Optimal,
        SelectionPolicy::Standalone,
    ];
    for &k in &args.models {
        let mut rng = StdRng::seed_from_u64(k as u64);
        let instances: Vec<Instance> = (0..args.instances)
            .map(|_| Instance::random(k, ScoreDist::Normal, PAPER_ENSEMBLE_GAIN, &mut rng))
            .collect();
        for policy in policies {
            if policy == SelectionPolicy::Optimal && k > MAX_OPTIMAL_MODELS {
                continue;
            }
            let mut times = Vec::new();
            for inst in &instances {
                let budget = inst.budget_at(0.5);
                let start = Instant::now();
                let mut reps = 0u32;
                while reps == 0 || start.elapsed() < Duration::from_millis(args.min_ms) {
                    std::hint::black_box(select(policy, &inst.costs, &budget, &inst.scores)?);
                    reps += 1;
                }
                times.push(start.elapsed().as_secs_f64() * 1e6 / reps as f64);
            }
            let mut total = 0.0;
            for inst in &instances {
                total += select(policy, &inst.costs, &inst.budget_at(0.5), &inst.scores)?.objective;
            }
            times.sort_by(f64::total_cmp);
            rows.push(Row {
                models: k,
                policy,
                median_us: times[times.len() / 2],
                max_us: times[times.len() - 1],
                mean_objective: total / instances.len() as f64,
            });
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "one selection, budget half-way between the cheapest model and all models, \
             Normal(0.5, 0.2) instances, {} per size",
            args.instances
        );
        println!(
            "{:>6}  {:>10}  {:>12}  {:>12}  {:>9}",
            "models", "policy", "median us", "max us", "mean F(A)"
        );
        for r in &rows {
            println!(
                "{:>6}  {:>10}  {:>12.1}  {:>12.1}  {:>9.4}",
                r.models,
                format!("{:?}", r.policy).to_lowercase(),
                r.median_us,
                r.max_us,
                r.mean_objective
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
