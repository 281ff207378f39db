//! Model links (paper sections 3.4 to 3.6): networks mapping one model's output to another's,
//! multi-source ensembles, training, traces and link bundles.
//!
//! - [`trace`]: the aligned-sample file recording writes and training reads.
//! - [`net`]: one link g_ij; the architecture follows the output forms (vec2vec in [`mlp`],
//!   hand-written; seq2vec, vec2seq and seq2seq in [`seq`], candle).
//! - [`ensemble`]: h_{A,j}, weights over any subset of sources.
//! - [`sample`]: one aligned sample (every model's output on a frame), what links train on.
//! - [`bundle`]: the trained set for one pipeline, its training, prediction, scoring,
//!   federated operations and persistence.
//! - [`view_links`]: links that learn from few samples over the sources' link views: per link
//!   a learner ([`ridge`], [`knn`], the paper's MLP, ...; [`learner`]) chosen on a held-out
//!   block in time ([`choose`]), per target the best link or a [`joint`] multi-source link;
//!   [`temporal`] inputs (the sources' recent views, the target's last exact output).
//! - [`reservoir`]: the labelled samples online training keeps, with their views, in time
//!   order.
//!
//! Pure Rust: no GStreamer, no ONNX Runtime.

pub mod bench;
pub mod bundle;
pub mod choose;
pub mod ensemble;
pub mod fast_seq;
pub mod joint;
pub mod knn;
pub mod learner;
pub mod loss_head;
pub mod mlp;
pub mod net;
pub mod norm;
pub mod optim;
pub mod reservoir;
pub mod ridge;
pub mod sample;
pub mod seq;
pub mod temporal;
pub mod trace;
pub mod view_links;

pub use bundle::{BundleError, LinkBundle, LinkScore, Prediction, ScoreMatrix};
pub use net::{Arch, LinkNet, TrainParams};
pub use sample::Sample;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("wrong output form: {0}")]
    Form(String),
    #[error("numeric failure in a link network: {0}")]
    Numeric(String),
    #[error("expected {expected} parameters, found {found}")]
    ParamCount { expected: usize, found: usize },
    #[error("no executed model links to target model {target}")]
    NoSource { target: usize },
    #[error("no sample has outputs of both model {from} and model {target}")]
    NoPairs { from: usize, target: usize },
    #[error("no link from model {from} to model {target}")]
    NoLink { from: usize, target: usize },
}
