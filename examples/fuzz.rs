//! Long fuzzing runs of the loaders of outside data (see `tests/fuzz_support`).
//!
//! ```text
//! cargo run --release --example fuzz -- FORMAT|all [--iterations N] [--seed S] [--save DIR]
//! ```
//!
//! FORMAT is one of pipeline, trace, bundle, oracle, state, tokens, labels, http. Prints one
//! summary line per format (inputs, accepted, rejected, findings, peak heap growth, slowest
//! input) and every finding; with `--save` the inputs of the findings are written to DIR.
//! Exits with status 1 when anything was found.

#[path = "../tests/fuzz_support/mod.rs"]
mod fuzz_support;

use fuzz_support::{GuardAlloc, Limits, fuzz, save_findings, targets};
use std::path::PathBuf;

#[global_allocator]
static ALLOC: GuardAlloc = GuardAlloc;

fn usage() -> ! {
    eprintln!(
        "usage: fuzz FORMAT|all [--iterations N] [--seed S] [--save DIR]\nformats: {}",
        targets::FORMATS.join(", ")
    );
    std::process::exit(2);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(format) = args.next() else { usage() };
    let (mut iterations, mut seed, mut save) = (10_000u64, 1u64, None::<PathBuf>);
    while let Some(a) = args.next() {
        let value = args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--iterations" => iterations = value.parse().unwrap_or_else(|_| usage()),
            "--seed" => seed = value.parse().unwrap_or_else(|_| usage()),
            "--save" => save = Some(PathBuf::from(value)),
            _ => usage(),
        }
    }
    let names: Vec<&str> = if format == "all" {
        targets::FORMATS.to_vec()
    } else if targets::FORMATS.contains(&format.as_str()) {
        vec![format.as_str()]
    } else {
        usage()
    };
    let mut found = 0;
    for name in names {
        let Some(f) = targets::build(name) else {
            usage()
        };
        let report = fuzz(f.as_ref(), iterations, seed, &Limits::default());
        println!("{}", report.summary());
        found += report.findings.len();
        if let Some(dir) = &save {
            match save_findings(&report, dir) {
                Ok(paths) => {
                    for p in paths {
                        println!("  saved {}", p.display());
                    }
                }
                Err(e) => eprintln!("cannot save the findings in {}: {e}", dir.display()),
            }
        }
    }
    std::process::exit(if found == 0 { 0 } else { 1 });
}
