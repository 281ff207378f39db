//! Selection time per policy for 10, 20 and 100 models (the optimum up to 20).

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use mlink::config::SelectionPolicy;
use mlink::schedule::select;
use mlink::schedule::simulate::{Instance, PAPER_ENSEMBLE_GAIN, ScoreDist};
use rand::{SeedableRng, rngs::StdRng};
use std::hint::black_box;

fn selection(c: &mut Criterion) {
    let mut group = c.benchmark_group("select");
    for k in [10usize, 20, 100] {
        let mut rng = StdRng::seed_from_u64(k as u64);
        let inst = Instance::random(k, ScoreDist::Normal, PAPER_ENSEMBLE_GAIN, &mut rng);
        let budget = inst.budget_at(0.5);
        for policy in [
            SelectionPolicy::Mlink,
            SelectionPolicy::Gain,
            SelectionPolicy::Optimal,
            SelectionPolicy::Standalone,
        ] {
            if policy == SelectionPolicy::Optimal && k > 20 {
                continue;
            }
            let name = format!("{policy:?}").to_lowercase();
            group.bench_with_input(BenchmarkId::new(name, k), &k, |b, _| {
                b.iter(|| select(policy, &inst.costs, &budget, black_box(&inst.scores)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, selection);
criterion_main!(benches);
