//! The soak run of `scripts/soak.sh` (see `tests/soak_support`).
//!
//! ```text
//! cargo run --release --example soak -- [--cameras N] [--minutes M] [--out DIR] [--mlink BIN]
//! ```

#[path = "../tests/soak_support/mod.rs"]
mod soak_support;

use std::path::PathBuf;

fn usage() -> ! {
    eprintln!("usage: soak [--cameras N] [--minutes M] [--out DIR] [--mlink BIN]");
    std::process::exit(2);
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let (mut cameras, mut minutes) = (8usize, 30.0f64);
    let mut out = root.join("out/soak");
    let mut mlink = root.join("target/release/mlink");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--cameras" => cameras = v.parse().unwrap_or_else(|_| usage()),
            "--minutes" => minutes = v.parse().unwrap_or_else(|_| usage()),
            "--out" => out = PathBuf::from(v),
            "--mlink" => mlink = PathBuf::from(v),
            _ => usage(),
        }
    }
    let report = soak_support::run(soak_support::SoakConfig {
        cameras,
        duration_s: (minutes * 60.0).round() as u64,
        sample_every_s: 10,
        warm_s: 300,
        fps: 5.0,
        mlink,
        footage: root.join("data/footage/vtest.avi"),
        models_dir: root.join("models"),
        out_dir: out.clone(),
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&report.summary).unwrap_or_default()
    );
    println!("report: {}", out.join("report.json").display());
    let s = &report.summary;
    let ok = !s.crashed && s.frames_with_lost_records == 0;
    std::process::exit(if ok { 0 } else { 1 });
}
