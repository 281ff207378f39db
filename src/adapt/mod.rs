//! Online link adaptation (paper section 4.1), oracle links for domain adaptation (4.2) and
//! cross-site federated aggregation (4.3).

pub mod aggregate;
