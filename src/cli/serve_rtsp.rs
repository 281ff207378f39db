//! `mlink serve-rtsp`: restream a file in a loop, or a test pattern, as an RTSP camera.

use anyhow::Context;
use std::process::ExitCode;

use crate::ingest::{RtspServerOptions, ServeSource, start_rtsp_server};

#[derive(clap::Args, Debug)]
pub struct ServeRtspArgs {
    /// A video file (served in a loop) or `test:PATTERN` (e.g. `test:ball`, `test:smpte`).
    pub source: String,
    /// TCP port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8554)]
    pub port: u16,
    /// Address to bind; use 0.0.0.0 to serve other machines.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: String,
    /// Mount path of the stream.
    #[arg(long, default_value = "/stream")]
    pub mount: String,
}

pub fn run(args: ServeRtspArgs) -> anyhow::Result<ExitCode> {
    let source = ServeSource::parse(&args.source)?;
    let server = start_rtsp_server(
        source,
        RtspServerOptions {
            bind: args.bind.clone(),
            port: args.port,
            mount: args.mount.clone(),
            ..RtspServerOptions::default()
        },
    )
    .with_context(|| format!("starting the RTSP server for {}", args.source))?;
    println!("{}", server.url());
    eprintln!(
        "serving {} at {} (Ctrl-C to stop)",
        args.source,
        server.url()
    );
    server.wait();
    Ok(ExitCode::SUCCESS)
}
