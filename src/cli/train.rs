use crate::link::trace::read_all;
use crate::link::{LinkBundle, TrainParams};
use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Trace of aligned model outputs (from `mlink record`).
    pub trace: PathBuf,
    /// Where to write the link bundle.
    #[arg(long)]
    pub out: PathBuf,
    /// Training epochs (paper: 100).
    #[arg(long, default_value_t = 100)]
    pub epochs: usize,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Mini-batch size.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// RMSprop learning rate.
    #[arg(long, default_value_t = 0.01)]
    pub learning_rate: f64,
    /// Hidden width as a multiple of the output length.
    #[arg(long, default_value_t = 2)]
    pub hidden_factor: usize,
    /// Share of samples held out to score links.
    #[arg(long, default_value_t = 0.2)]
    pub validation_split: f64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (header, records) =
        read_all(&args.trace).with_context(|| format!("reading trace {}", args.trace.display()))?;
    anyhow::ensure!(
        header.models.len() >= 2,
        "the trace records fewer than two models"
    );
    anyhow::ensure!(!records.is_empty(), "the trace holds no records");
    let params = TrainParams {
        epochs: args.epochs,
        batch_size: args.batch_size.max(1),
        learning_rate: args.learning_rate,
        hidden_factor: args.hidden_factor.max(1),
        dropout: 0.5,
        seed: args.seed,
    };
    let k = header.models.len();
    let bar = indicatif::ProgressBar::new((k * (k - 1) + k) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg} [{elapsed}]")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let bundle = LinkBundle::train_from_trace(
        &header,
        &records,
        &params,
        args.validation_split,
        threads,
        &|msg| {
            bar.set_message(msg.to_string());
            bar.inc(1);
        },
    )?;
    bar.finish_and_clear();
    bundle
        .save(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "trained {} links and {} ensembles on {} samples ({} held out) -> {}",
        k * (k - 1),
        k,
        bundle.meta.train_samples,
        bundle.meta.validation_samples,
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
