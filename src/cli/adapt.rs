//! `mlink adapt`: trains an oracle link from a deployed model's output to ground-truth labels
//! (paper section 4.2) and reports the accuracy before and after on held-out labels.

use crate::adapt::labels::Labels;
use crate::adapt::oracle::{OracleLink, match_labels};
use crate::link::TrainParams;
use crate::link::trace::read_all;
use crate::output::TaskKind;
use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;

/// The oracle node's task, when the labels mean something other than the model's output.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum OracleTask {
    Count,
    Regression,
    SingleLabel,
    MultiLabel,
    Localization,
}

impl From<OracleTask> for TaskKind {
    fn from(t: OracleTask) -> Self {
        match t {
            OracleTask::Count => TaskKind::Count,
            OracleTask::Regression => TaskKind::Regression,
            OracleTask::SingleLabel => TaskKind::SingleLabel,
            OracleTask::MultiLabel => TaskKind::MultiLabel,
            OracleTask::Localization => TaskKind::Localization,
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Id of the deployed model (as the trace names it).
    #[arg(long)]
    pub model: String,
    /// Ground-truth labels: CSV `camera,seq,label` (vector labels as `a;b;c`) or JSON lines
    /// `{"camera": .., "seq": .., "label": number or [numbers]}`.
    #[arg(long)]
    pub labels: PathBuf,
    /// Trace recorded on the site (`mlink record`), holding the model's outputs.
    #[arg(long)]
    pub trace: PathBuf,
    /// Where to write the oracle link (`mlink-oracle-link` JSON, written atomically).
    #[arg(long)]
    pub out: PathBuf,
    /// Share of the labelled frames held out to measure accuracy before and after.
    #[arg(long, default_value_t = 0.3)]
    pub holdout: f64,
    /// Random seed (split and initialisation).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Task of the oracle output (default: the model's own when the labels fit its output;
    /// scalar labels of a counter stay counts, of a classifier are class indices).
    #[arg(long, value_enum)]
    pub task: Option<OracleTask>,
    /// Classes of a single-label oracle whose labels are class indices (default: the model's
    /// output length).
    #[arg(long)]
    pub classes: Option<usize>,
    /// Training epochs.
    #[arg(long, default_value_t = 200)]
    pub epochs: usize,
    /// RMSprop learning rate.
    #[arg(long, default_value_t = 0.01)]
    pub learning_rate: f64,
    /// Hidden width as a multiple of the output length (at least 16 units).
    #[arg(long, default_value_t = 2)]
    pub hidden_factor: usize,
    /// Drop probability of the hidden layer in training.
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f32,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        (0.0..1.0).contains(&args.holdout),
        "--holdout must be in [0, 1)"
    );
    anyhow::ensure!(
        (0.0..1.0).contains(&args.dropout),
        "--dropout must be in [0, 1)"
    );
    let (header, records) =
        read_all(&args.trace).with_context(|| format!("reading trace {}", args.trace.display()))?;
    let labels = Labels::load(&args.labels)?;
    let frames = match_labels(
        &header,
        &records,
        &args.model,
        &labels,
        args.task.map(TaskKind::from),
        args.classes,
    )?;
    let params = TrainParams {
        epochs: args.epochs,
        batch_size: 32,
        learning_rate: args.learning_rate,
        hidden_factor: args.hidden_factor.max(1),
        dropout: args.dropout,
        seed: args.seed,
    };
    let link = OracleLink::train(&frames, &params, args.holdout)?;
    link.save(&args.out)?;
    let report = link
        .report
        .as_ref()
        .context("the trained link has no report")?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "model": link.source_model,
                "oracle_spec": link.spec,
                "out": args.out,
                "report": report,
            }))?
        );
    } else {
        println!(
            "oracle link {} -> oracle ({:?}, {:?}): {} training and {} held-out labels",
            link.source_model,
            link.spec.task,
            link.spec.form,
            report.train_samples,
            report.holdout_samples
        );
        println!("metric: {}", report.metric);
        match report.raw_holdout_score {
            Some(s) => println!("before (model output as is), held out: {s:.4}"),
            None => println!("before: n/a (the model's output has another form than the labels)"),
        }
        println!(
            "after (link(model(x))), held out:       {:.4}",
            report.link_holdout_score
        );
        println!(
            "after, on the training labels:          {:.4}",
            report.link_train_score
        );
        println!("wrote {}", args.out.display());
    }
    Ok(ExitCode::SUCCESS)
}
