use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Pipeline files to check (syntax, fields, and every start-up check of `mlink run` that
    /// needs no session: heads, oracle links, a named link bundle).
    #[arg(required_unless_present = "schema")]
    pub files: Vec<PathBuf>,
    /// Print the JSON schema of pipeline files instead of checking files.
    #[arg(long, conflicts_with = "files")]
    pub schema: bool,
}

/// Exit status 0 when every file is valid, 1 when any is not (every error is printed).
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.schema {
        let text = serde_json::to_string_pretty(&crate::config::json_schema())
            .context("cannot render the schema")?;
        println!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    let mut ok = true;
    for f in &args.files {
        match crate::config::load_and_validate(f) {
            Ok(p) => {
                // What `mlink run` checks at start-up, without loading any session.
                let problems =
                    crate::engine::startup::startup_checks(&p, &crate::config::base_dir(f));
                if problems.is_empty() {
                    println!("{}: ok", f.display());
                } else {
                    ok = false;
                    for e in problems {
                        eprintln!("{}: {e}", f.display());
                    }
                }
            }
            Err(errors) => {
                ok = false;
                for e in errors {
                    eprintln!("{e}");
                }
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
