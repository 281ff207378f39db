use crate::link::bench::{seq2vec_link, six_source_bundle, train_vec2vec, vec2vec_workload};
use std::process::ExitCode;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Median wall time of `f` over `runs` runs, in seconds.
fn median(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// Times link training and prediction on the current thread (one core).
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let train_s = median(3, || {
        std::hint::black_box(train_vec2vec(100));
    });
    let net = train_vec2vec(1);
    let (_, xs, _) = vec2vec_workload();
    let per = |n: usize, s: f64| s / n as f64;
    let vec_s = per(
        1000,
        median(5, || {
            for x in xs.iter().cycle().take(1000) {
                std::hint::black_box(net.predict(x).ok());
            }
        }),
    );
    let (bundle, active) = six_source_bundle();
    let act: Vec<(usize, &crate::output::OutputValue)> =
        active.iter().map(|(i, v)| (*i, v)).collect();
    let ens_s = per(
        200,
        median(5, || {
            for _ in 0..200 {
                std::hint::black_box(bundle.predict(0, &act).ok());
            }
        }),
    );
    let (seq, input) = seq2vec_link();
    let seq_s = per(
        100,
        median(5, || {
            for _ in 0..100 {
                std::hint::black_box(seq.predict(&input).ok());
            }
        }),
    );
    let profile = if cfg!(debug_assertions) {
        "dev"
    } else {
        "release"
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "profile": profile,
                "train_vec2vec_80_160_80_800x100_s": train_s,
                "predict_vec2vec_us": vec_s * 1e6,
                "predict_ensemble_6_sources_us": ens_s * 1e6,
                "predict_seq2vec_20_tokens_us": seq_s * 1e6,
            })
        );
    } else {
        println!("profile: {profile} (one thread)");
        println!(
            "train vec2vec 80-160-80, 800 samples, batch 32, 100 epochs: {train_s:.3} s (target <= 0.3 s)"
        );
        println!(
            "predict vec2vec, one sample: {:.1} us (target <= 20 us)",
            vec_s * 1e6
        );
        println!(
            "predict six-source ensemble: {:.1} us (target <= 100 us)",
            ens_s * 1e6
        );
        println!(
            "predict seq2vec, 20 tokens: {:.1} us (target <= 200 us)",
            seq_s * 1e6
        );
    }
    Ok(ExitCode::SUCCESS)
}
