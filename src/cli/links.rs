use crate::link::LinkBundle;
use crate::output::metric_name;
use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Link bundle (from `mlink train`).
    pub bundle: PathBuf,
}

/// Prints the link matrix (validation score of every source -> target link, as in the paper's
/// Table III) and each target's ensemble over all its sources.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let b = LinkBundle::load(&args.bundle)
        .with_context(|| format!("loading {}", args.bundle.display()))?;
    let k = b.model_count();
    let w = b
        .models
        .iter()
        .map(|m| m.id.len())
        .max()
        .unwrap_or(6)
        .max(8);
    print!("{:w$}", "src \\ dst");
    for m in &b.models {
        print!(" {:>w$}", m.id);
    }
    println!();
    for i in 0..k {
        print!("{:w$}", b.models[i].id);
        for j in 0..k {
            match b.link(i, j) {
                Some(l) => match l.score {
                    Some(s) => print!(" {:>w$.3}", s),
                    None => print!(" {:>w$}", "n/a"),
                },
                None => print!(" {:>w$}", "-"),
            }
        }
        println!();
    }
    print!("{:w$}", "ensemble");
    for j in 0..k {
        let all: Vec<usize> = (0..k).filter(|&i| i != j).collect();
        print!(" {:>w$.3}", b.ensemble_score(&all, j));
    }
    println!();
    println!();
    for m in &b.models {
        println!("{}: {} ({})", m.id, metric_name(m.spec.task), form(&m.spec));
    }
    let meta = &b.meta;
    println!(
        "trained on {} samples, {} held out; {} epochs, batch {}, lr {}, seed {}",
        meta.train_samples,
        meta.validation_samples,
        meta.params.epochs,
        meta.params.batch_size,
        meta.params.learning_rate,
        meta.params.seed
    );
    Ok(ExitCode::SUCCESS)
}

fn form(spec: &crate::output::OutputSpec) -> String {
    match spec.form {
        crate::output::OutputForm::Vector { len } => format!("vector of {len}"),
        crate::output::OutputForm::Sequence { vocab, max_len, .. } => {
            format!("sequence of <= {max_len} tokens over {vocab}")
        }
    }
}
