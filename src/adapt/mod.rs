//! Online link adaptation (paper section 4.1), oracle links for domain adaptation (4.2),
//! cross-site federated aggregation (4.3) and the fusion of links (4.3, 6.5).
//!
//! - [`labels`]: ground-truth label files (CSV or JSON lines) for oracle links.
//! - [`oracle`]: links from a deployed model to the oracle node, their training and files.
//! - [`fusion`]: local-global and cross-task fusion through ensemble weights.
//! - [`aggregate`]: the federated averaging server and client.
//! - [`export`]: a bundle's link as the aggregator's link file, and back.
//! - [`edge`]: blocking federated rounds for a bundle's link.
//! - [`crossdomain`]: the local / global / fused evaluation on a trace split into domains.

pub mod aggregate;
pub mod crossdomain;
pub mod edge;
pub mod export;
pub mod fusion;
pub mod labels;
pub mod oracle;
