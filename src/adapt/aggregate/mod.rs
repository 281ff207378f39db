//! Cross-domain aggregation of model links (paper section 4.3, Algorithm 1), over HTTP.
//!
//! A *global link* is a flat `f32` parameter vector with a [`LinkSpec`] (id, architecture,
//! tensor shapes) that every participant agrees on; how the link network reads the vector and
//! computes its update stays with the link itself. Each round:
//!
//! 1. an edge pulls the global link and its open round number ([`AggregatorClient::pull`]);
//! 2. it computes `delta = theta_local - theta_global` on its local samples and uploads it with
//!    the round number and, optionally, its sample count ([`AggregatorClient::push`]);
//! 3. the server checks each update (token, shapes, finiteness, round, one per edge) and
//!    closes the round when every known edge has uploaded, or at the deadline with at least
//!    `quorum` updates (a deadline without quorum is extended by one period, keeping the
//!    updates it has): `theta_G <- theta_G + server_lr * mean(delta)`, the mean weighted by
//!    sample counts when every update carries one;
//! 4. the new state is written atomically to the state file and the next round opens.
//!
//! Updates accepted in a round that has not closed live in memory only: after a restart the
//! server resumes from its last completed round and the edges upload again.

pub mod client;
pub mod messages;
pub mod server;
pub mod state;
pub mod tokens;

pub use client::{AggregatorClient, ClientError, LocalUpdate, WireBytes, run_round};
pub use messages::{
    ClosedBy, ErrorBody, ErrorCode, GlobalLink, LinkSpec, LinkStateView, PROTOCOL_VERSION,
    ParamVec, RoundSummary, StateView, TensorShape, UpdateAccepted, UpdateRequest,
};
pub use server::{AggregateError, AggregatorConfig, AggregatorServer, RunningAggregator};
pub use state::{AggregatorState, LinkInit, Rejection, RoundPolicy, StateError};
pub use tokens::{EdgeTokens, Token, TokensError};
