//! `mlink aggregate`: the cloud side of cross-domain link aggregation (paper Algorithm 1).

use crate::adapt::aggregate::{
    AggregatorConfig, AggregatorServer, EdgeTokens, LinkInit, RoundPolicy,
};
use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to serve on, e.g. 0.0.0.0:7070 (plain HTTP: put a TLS reverse proxy in front
    /// of it when edges reach it over an untrusted network).
    #[arg(long)]
    pub listen: SocketAddr,
    /// State file (global weights and rounds), written atomically after every round; resumed
    /// when it exists.
    #[arg(long)]
    pub state: PathBuf,
    /// Edge credentials: one `EDGE_ID TOKEN` line per edge (tokens of 16 characters or more).
    #[arg(long)]
    pub tokens: PathBuf,
    /// Link initialization file (`mlink-aggregator-link` format) to add when the state lacks
    /// it; repeat for several links.
    #[arg(long = "link")]
    pub links: Vec<PathBuf>,
    /// Seconds a round stays open before it closes with the updates it has.
    #[arg(long, default_value_t = 60.0)]
    pub round_deadline_secs: f64,
    /// Updates a round needs to close at its deadline (default: a majority of the edges);
    /// without them the deadline is extended by another period.
    #[arg(long)]
    pub quorum: Option<usize>,
    /// Rate applied to the mean update (1 is plain federated averaging).
    #[arg(long, default_value_t = 1.0)]
    pub server_lr: f32,
    /// Largest accepted request body in bytes (default: twice the largest link's update).
    #[arg(long)]
    pub max_body_bytes: Option<usize>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !(args.round_deadline_secs.is_finite() && args.round_deadline_secs > 0.0) {
        anyhow::bail!("--round-deadline-secs must be a positive number of seconds");
    }
    if !args.server_lr.is_finite() || args.server_lr <= 0.0 {
        anyhow::bail!("--server-lr must be a positive number");
    }
    let tokens = EdgeTokens::load(&args.tokens).context("reading the tokens file")?;
    let edges = tokens.edge_ids().len();
    let quorum = args.quorum.unwrap_or(edges / 2 + 1);
    if quorum == 0 || quorum > edges {
        anyhow::bail!(
            "--quorum {quorum} must be between 1 and the {edges} edges of the tokens file"
        );
    }
    let links = args
        .links
        .iter()
        .map(|p| LinkInit::load(p))
        .collect::<Result<Vec<_>, _>>()?;
    let config = AggregatorConfig {
        state_path: args.state.clone(),
        tokens,
        links,
        policy: RoundPolicy {
            deadline: Duration::from_secs_f64(args.round_deadline_secs),
            quorum,
            server_lr: args.server_lr,
        },
        max_body_bytes: args.max_body_bytes,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let server = AggregatorServer::open(config)?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        let addr = listener.local_addr()?;
        println!(
            "aggregating on http://{addr} ({edges} edges, quorum {quorum}, deadline {}s, state {})",
            args.round_deadline_secs,
            args.state.display()
        );
        server
            .serve(listener, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .context("serving")?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
