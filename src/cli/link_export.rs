//! `mlink link-export` / `mlink link-import`: one link of a bundle as the aggregator's link
//! file (`mlink aggregate --link FILE`), and a (global) link file back into a bundle.

use crate::adapt::aggregate::LinkInit;
use crate::adapt::export::{export_link, import_link};
use crate::link::LinkBundle;
use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// Link bundle (`mlink train`).
    pub bundle: PathBuf,
    /// Source model id of the link.
    #[arg(long)]
    pub source: String,
    /// Target model id of the link.
    #[arg(long)]
    pub target: String,
    /// Where to write the link file (`mlink-aggregator-link`, written atomically).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// Link bundle whose link is replaced.
    pub bundle: PathBuf,
    /// Link file (`mlink link-export`, or the global link an aggregator serves).
    #[arg(long)]
    pub link: PathBuf,
    /// Source model id of the link.
    #[arg(long)]
    pub source: String,
    /// Target model id of the link.
    #[arg(long)]
    pub target: String,
    /// Where to write the updated bundle (default: replace BUNDLE atomically).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run_export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let bundle = LinkBundle::load(&args.bundle)
        .with_context(|| format!("reading bundle {}", args.bundle.display()))?;
    let init = export_link(&bundle, &args.source, &args.target)?;
    init.save(&args.out)?;
    println!(
        "wrote {}: link {:?} ({}, {} parameters, fingerprint {})",
        args.out.display(),
        init.spec.link_id,
        init.spec.arch,
        init.spec.num_params(),
        &init.spec.fingerprint()[..16]
    );
    Ok(ExitCode::SUCCESS)
}

pub fn run_import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let mut bundle = LinkBundle::load(&args.bundle)
        .with_context(|| format!("reading bundle {}", args.bundle.display()))?;
    let init = LinkInit::load(&args.link)?;
    import_link(&mut bundle, &args.source, &args.target, &init)
        .with_context(|| format!("importing {}", args.link.display()))?;
    let out = args.out.unwrap_or(args.bundle);
    bundle
        .save(&out)
        .with_context(|| format!("writing bundle {}", out.display()))?;
    println!(
        "wrote {}: link {:?} set from {} (weights sha256 {})",
        out.display(),
        init.spec.link_id,
        args.link.display(),
        &init.params.sha256()[..16]
    );
    Ok(ExitCode::SUCCESS)
}
