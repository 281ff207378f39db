//! The aggregation state machine, without any networking: the global links, their open
//! rounds, the checks an update must pass, federated averaging and persistence.
//!
//! Every check runs before anything is changed, so a refused update leaves the state exactly
//! as it was. A round closes either when every known edge has uploaded or when its deadline
//! passes with at least `quorum` updates; a deadline that passes without a quorum is extended
//! by one more deadline period, keeping the updates already accepted.

use super::messages::{
    ClosedBy, ErrorCode, GlobalLink, LinkSpec, LinkStateView, PROTOCOL_VERSION, ParamVec,
    RoundSummary, StateView, UpdateRequest,
};
use crate::versioned::{Format, VersionedError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Name and version of the persisted state file (version 1 files are still read).
pub const STATE_FORMAT: &str = "mlink-aggregator-state";
pub const STATE_FORMAT_VERSION: u32 = 2;
/// Name and version of a link initialization file (`mlink aggregate --link FILE`; version 1
/// files are still read).
pub const LINK_INIT_FORMAT: &str = "mlink-aggregator-link";
pub const LINK_INIT_FORMAT_VERSION: u32 = 2;
const STATE_FILE: Format = Format {
    name: STATE_FORMAT,
    what: "aggregator state file",
    version: STATE_FORMAT_VERSION,
};
const LINK_INIT_FILE: Format = Format {
    name: LINK_INIT_FORMAT,
    what: "link initialization file",
    version: LINK_INIT_FORMAT_VERSION,
};

/// A refused request: the code and a message for the edge's operator.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct Rejection {
    pub code: ErrorCode,
    pub message: String,
}

impl Rejection {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Errors loading or saving state and link files.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: not a valid {what}: {message}")]
    Invalid {
        path: PathBuf,
        what: &'static str,
        message: String,
    },
    #[error("link {link_id:?}: {message}")]
    Link { link_id: String, message: String },
    /// A state or link file that cannot be read, is damaged or is from a newer build.
    #[error(transparent)]
    File(#[from] VersionedError),
    #[error(
        "no links to aggregate: the state file {0} does not exist or is empty and no link initialization file was given"
    )]
    NoLinks(PathBuf),
}

/// A link's starting point: its spec and initial weights (Algorithm 1, line 2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkInit {
    pub spec: LinkSpec,
    pub params: ParamVec,
}

impl LinkInit {
    /// Checks the spec and that the weights fit it and are finite.
    pub fn new(spec: LinkSpec, params: Vec<f32>) -> Result<Self, StateError> {
        let init = Self {
            spec,
            params: ParamVec(params),
        };
        init.validate()?;
        Ok(init)
    }

    fn validate(&self) -> Result<(), StateError> {
        let link_err = |message: String| StateError::Link {
            link_id: self.spec.link_id.clone(),
            message,
        };
        self.spec.validate().map_err(link_err)?;
        if self.params.0.len() != self.spec.num_params() {
            return Err(link_err(format!(
                "{} initial weights for a spec of {} parameters",
                self.params.0.len(),
                self.spec.num_params()
            )));
        }
        if let Some(i) = self.params.first_non_finite() {
            return Err(link_err(format!("initial weight {i} is not finite")));
        }
        Ok(())
    }

    /// Reads a link initialization file: format `mlink-aggregator-link` in the envelope of
    /// [`crate::versioned`], content `{"spec": {...}, "params": "<base64 f32le>"}`.
    pub fn load(path: &Path) -> Result<Self, StateError> {
        let (_, init): (u32, Self) = LINK_INIT_FILE.read_json(path)?;
        init.validate()?;
        Ok(init)
    }

    /// Writes a link initialization file atomically.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        Ok(LINK_INIT_FILE.write_json(path, self)?)
    }
}

/// How rounds close and how the mean is applied.
#[derive(Clone, Debug)]
pub struct RoundPolicy {
    /// Time a round stays open, counted from its opening; also the length of an extension.
    pub deadline: Duration,
    /// Updates a round needs to close at its deadline (at least 1).
    pub quorum: usize,
    /// Rate applied to the mean delta (1 reproduces Algorithm 1).
    pub server_lr: f32,
}

/// One accepted update, kept until its round closes.
#[derive(Clone, Debug)]
struct PendingUpdate {
    delta: Vec<f32>,
    n_samples: Option<u64>,
    body_bytes: u64,
}

/// A global link and its open round.
#[derive(Debug)]
struct LinkState {
    spec: LinkSpec,
    fingerprint: String,
    round: u64,
    params: Vec<f32>,
    last_round: Option<RoundSummary>,
    pending: BTreeMap<String, PendingUpdate>,
    deadline: Instant,
    extensions: u32,
}

/// What happened to an accepted update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub round: u64,
    pub accepted_in_round: usize,
    /// The round summary when this update closed the round.
    pub closed: Option<RoundSummary>,
    pub open_round: u64,
}

/// A round closed at a deadline check, or a deadline extended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeadlineEvent {
    Closed {
        link_id: String,
        summary: RoundSummary,
    },
    Extended {
        link_id: String,
        round: u64,
        updates: usize,
    },
}

/// The whole aggregation state. Not thread-safe by itself: the server wraps it in a mutex.
#[derive(Debug)]
pub struct AggregatorState {
    links: BTreeMap<String, LinkState>,
    /// Every edge allowed to upload; a round with all of them closes at once.
    edges: Vec<String>,
    policy: RoundPolicy,
    path: PathBuf,
}

/// The content of the state file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    links: Vec<PersistedLink>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PersistedLink {
    spec: LinkSpec,
    fingerprint: String,
    round: u64,
    params: ParamVec,
    last_round: Option<RoundSummary>,
}

impl AggregatorState {
    /// Opens the state at `path`: resumes it when the file exists (its rounds and weights win
    /// over `inits`, whose specs must match), and adds the links of `inits` it lacks. The
    /// result is persisted before it is returned, so a fresh server has a file from round 0.
    pub fn open(
        path: &Path,
        inits: Vec<LinkInit>,
        edges: Vec<String>,
        policy: RoundPolicy,
        now: Instant,
    ) -> Result<Self, StateError> {
        if policy.quorum == 0 {
            return Err(StateError::Link {
                link_id: String::new(),
                message: "quorum must be at least 1".into(),
            });
        }
        let mut links = BTreeMap::new();
        if path.exists() {
            let (_, file): (u32, StateFile) = STATE_FILE.read_json(path)?;
            for p in file.links {
                let id = p.spec.link_id.clone();
                let invalid = |message: String| StateError::Invalid {
                    path: path.to_path_buf(),
                    what: "aggregator state file",
                    message: format!("link {id:?}: {message}"),
                };
                p.spec.validate().map_err(invalid)?;
                if p.fingerprint != p.spec.fingerprint() {
                    return Err(invalid(
                        "stored fingerprint does not match its spec (file edited or corrupt)"
                            .into(),
                    ));
                }
                if p.params.0.len() != p.spec.num_params() {
                    return Err(invalid(format!(
                        "{} weights for {} parameters",
                        p.params.0.len(),
                        p.spec.num_params()
                    )));
                }
                if p.params.first_non_finite().is_some() {
                    return Err(invalid("non-finite weights".into()));
                }
                let state = LinkState::new(
                    p.spec,
                    p.round,
                    p.params.0,
                    p.last_round,
                    now + policy.deadline,
                );
                if links.insert(id.clone(), state).is_some() {
                    return Err(invalid("link stored twice".into()));
                }
            }
        }
        for init in inits {
            init.validate()?;
            let id = init.spec.link_id.clone();
            match links.get(&id) {
                Some(existing) if existing.spec != init.spec => {
                    return Err(StateError::Link {
                        link_id: id,
                        message: format!(
                            "the state file {} holds this link with another spec (fingerprint {} vs {}); use another state file or link id",
                            path.display(),
                            existing.fingerprint,
                            init.spec.fingerprint()
                        ),
                    });
                }
                Some(_) => {} // resumed: the persisted weights are the newer ones
                None => {
                    let state =
                        LinkState::new(init.spec, 0, init.params.0, None, now + policy.deadline);
                    links.insert(id, state);
                }
            }
        }
        if links.is_empty() {
            return Err(StateError::NoLinks(path.to_path_buf()));
        }
        let mut edges = edges;
        edges.sort();
        edges.dedup();
        let state = Self {
            links,
            edges,
            policy,
            path: path.to_path_buf(),
        };
        state.persist()?;
        Ok(state)
    }

    pub fn link_ids(&self) -> Vec<String> {
        self.links.keys().cloned().collect()
    }

    pub fn policy(&self) -> &RoundPolicy {
        &self.policy
    }

    /// The global link as an edge pulls it.
    pub fn global(&self, link_id: &str) -> Result<GlobalLink, Rejection> {
        let l = self.link(link_id)?;
        Ok(GlobalLink {
            version: PROTOCOL_VERSION,
            spec: l.spec.clone(),
            fingerprint: l.fingerprint.clone(),
            round: l.round,
            params: ParamVec(l.params.clone()),
        })
    }

    pub fn view(&self) -> StateView {
        StateView {
            version: PROTOCOL_VERSION,
            links: self
                .links
                .values()
                .map(|l| LinkStateView {
                    link_id: l.spec.link_id.clone(),
                    fingerprint: l.fingerprint.clone(),
                    round: l.round,
                    num_params: l.params.len(),
                    params_sha256: ParamVec(l.params.clone()).sha256(),
                    pending_edges: l.pending.keys().cloned().collect(),
                    last_round: l.last_round.clone(),
                })
                .collect(),
        }
    }

    fn link(&self, link_id: &str) -> Result<&LinkState, Rejection> {
        self.links.get(link_id).ok_or_else(|| {
            Rejection::new(
                ErrorCode::UnknownLink,
                format!("no link {link_id:?} on this aggregator"),
            )
        })
    }

    /// Checks an update from the authenticated `edge` and, when it passes, counts it in the
    /// open round, closing the round when every known edge has now uploaded. A refusal leaves
    /// the state untouched.
    pub fn submit(
        &mut self,
        edge: &str,
        link_id: &str,
        req: UpdateRequest,
        body_bytes: u64,
        now: Instant,
    ) -> Result<Accepted, Rejection> {
        self.check(edge, link_id, &req)?;
        let all_edges = self.edges.len();
        let Some(l) = self.links.get_mut(link_id) else {
            return Err(Rejection::new(
                ErrorCode::UnknownLink,
                format!("no link {link_id:?}"),
            ));
        };
        l.pending.insert(
            edge.to_string(),
            PendingUpdate {
                delta: req.delta.0,
                n_samples: req.n_samples,
                body_bytes,
            },
        );
        let round = l.round;
        let accepted_in_round = l.pending.len();
        let closed = if accepted_in_round >= all_edges {
            self.close_round(link_id, ClosedBy::AllEdges, now)
        } else {
            None
        };
        let open_round = self.links.get(link_id).map_or(round, |l| l.round);
        Ok(Accepted {
            round,
            accepted_in_round,
            closed,
            open_round,
        })
    }

    fn check(&self, edge: &str, link_id: &str, req: &UpdateRequest) -> Result<(), Rejection> {
        use ErrorCode::*;
        if req.version != PROTOCOL_VERSION {
            return Err(Rejection::new(
                UnsupportedVersion,
                format!(
                    "message version {} (this server speaks version {PROTOCOL_VERSION})",
                    req.version
                ),
            ));
        }
        if req.edge_id != edge {
            return Err(Rejection::new(
                EdgeMismatch,
                format!(
                    "the update names edge {:?} but the token belongs to edge {edge:?}",
                    req.edge_id
                ),
            ));
        }
        let l = self.link(link_id)?;
        if let Some(fp) = &req.fingerprint
            && *fp != l.fingerprint
        {
            return Err(Rejection::new(
                FingerprintMismatch,
                format!(
                    "update computed for link spec {fp}, the server's is {}",
                    l.fingerprint
                ),
            ));
        }
        if req.round < l.round {
            return Err(Rejection::new(
                StaleRound,
                format!(
                    "update for round {} but round {} is open: pull the global link again",
                    req.round, l.round
                ),
            ));
        }
        if req.round > l.round {
            return Err(Rejection::new(
                FutureRound,
                format!(
                    "update for round {} but round {} is open",
                    req.round, l.round
                ),
            ));
        }
        if l.pending.contains_key(edge) {
            return Err(Rejection::new(
                DuplicateUpdate,
                format!(
                    "edge {edge:?} already uploaded an update for round {}",
                    l.round
                ),
            ));
        }
        if req.delta.0.len() != l.params.len() {
            return Err(Rejection::new(
                ShapeMismatch,
                format!(
                    "update has {} values, link {link_id:?} has {} parameters ({})",
                    req.delta.0.len(),
                    l.params.len(),
                    l.spec
                        .shapes
                        .iter()
                        .map(|s| format!("{}{:?}", s.name, s.dims))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        if let Some(i) = req.delta.first_non_finite() {
            return Err(Rejection::new(
                NonFinite,
                format!("update value {i} is {}", req.delta.0[i]),
            ));
        }
        if req.n_samples == Some(0) {
            return Err(Rejection::new(
                InvalidSampleCount,
                "n_samples is 0: an update needs at least one sample",
            ));
        }
        Ok(())
    }

    /// Closes or extends the rounds whose deadline has passed.
    pub fn on_deadlines(&mut self, now: Instant) -> Vec<DeadlineEvent> {
        let due: Vec<String> = self
            .links
            .iter()
            .filter(|(_, l)| now >= l.deadline)
            .map(|(id, _)| id.clone())
            .collect();
        let mut events = Vec::new();
        for id in due {
            let quorum = self.policy.quorum;
            let deadline = self.policy.deadline;
            let Some(l) = self.links.get_mut(&id) else {
                continue;
            };
            if l.pending.len() >= quorum {
                if let Some(summary) = self.close_round(&id, ClosedBy::Deadline, now) {
                    events.push(DeadlineEvent::Closed {
                        link_id: id,
                        summary,
                    });
                }
            } else {
                l.deadline = now + deadline;
                l.extensions += 1;
                events.push(DeadlineEvent::Extended {
                    link_id: id,
                    round: l.round,
                    updates: l.pending.len(),
                });
            }
        }
        events
    }

    /// The earliest deadline of an open round.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.links.values().map(|l| l.deadline).min()
    }

    /// Averages the round's deltas into the global weights, persists the new state and opens
    /// the next round. When the new state cannot be persisted (or the mean is not finite) the
    /// round stays open with its updates and `None` is returned; the next deadline retries.
    fn close_round(
        &mut self,
        link_id: &str,
        closed_by: ClosedBy,
        now: Instant,
    ) -> Option<RoundSummary> {
        let server_lr = self.policy.server_lr;
        let deadline = self.policy.deadline;
        let l = self.links.get_mut(link_id)?;
        let new_params = fedavg(&l.params, l.pending.values(), server_lr)?;
        let summary = RoundSummary {
            round: l.round,
            edges: l.pending.keys().cloned().collect(),
            closed_by,
            received_bytes: l.pending.values().map(|p| p.body_bytes).sum(),
            extensions: l.extensions,
            closed_unix_ms: unix_ms(),
        };
        let old_params = std::mem::replace(&mut l.params, new_params);
        let old_last = l.last_round.replace(summary.clone());
        l.round += 1;
        if let Err(e) = self.persist() {
            tracing::error!(link = link_id, error = %e, "could not persist the closed round; it stays open");
            let l = self.links.get_mut(link_id)?;
            l.params = old_params;
            l.last_round = old_last;
            l.round -= 1;
            return None;
        }
        let l = self.links.get_mut(link_id)?;
        l.pending.clear();
        l.extensions = 0;
        l.deadline = now + deadline;
        Some(summary)
    }

    fn persist(&self) -> Result<(), StateError> {
        let file = StateFile {
            links: self
                .links
                .values()
                .map(|l| PersistedLink {
                    spec: l.spec.clone(),
                    fingerprint: l.fingerprint.clone(),
                    round: l.round,
                    params: ParamVec(l.params.clone()),
                    last_round: l.last_round.clone(),
                })
                .collect(),
        };
        Ok(STATE_FILE.write_json(&self.path, &file)?)
    }
}

impl LinkState {
    fn new(
        spec: LinkSpec,
        round: u64,
        params: Vec<f32>,
        last_round: Option<RoundSummary>,
        deadline: Instant,
    ) -> Self {
        Self {
            fingerprint: spec.fingerprint(),
            spec,
            round,
            params,
            last_round,
            pending: BTreeMap::new(),
            deadline,
            extensions: 0,
        }
    }
}

/// `theta + lr * mean(delta)`, the mean weighted by sample counts when every update has one.
/// Accumulates in f64; `None` when the result is not finite.
fn fedavg<'a>(
    theta: &[f32],
    updates: impl Iterator<Item = &'a PendingUpdate> + Clone,
    lr: f32,
) -> Option<Vec<f32>> {
    let weighted = updates.clone().all(|u| u.n_samples.is_some());
    let weight = |u: &PendingUpdate| {
        if weighted {
            u.n_samples.unwrap_or(1) as f64
        } else {
            1.0
        }
    };
    let total: f64 = updates.clone().map(weight).sum();
    if total <= 0.0 {
        return None;
    }
    let mut acc = vec![0f64; theta.len()];
    for u in updates {
        let w = weight(u) / total;
        for (a, d) in acc.iter_mut().zip(&u.delta) {
            *a += w * f64::from(*d);
        }
    }
    let out: Vec<f32> = theta
        .iter()
        .zip(&acc)
        .map(|(t, m)| (f64::from(*t) + f64::from(lr) * m) as f32)
        .collect();
    out.iter().all(|v| v.is_finite()).then_some(out)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapt::aggregate::messages::TensorShape;

    fn spec() -> LinkSpec {
        LinkSpec::new("a->b", "linear", vec![TensorShape::new("w", &[3])])
    }

    fn update(edge: &str, round: u64, delta: Vec<f32>, n: Option<u64>) -> UpdateRequest {
        UpdateRequest {
            version: PROTOCOL_VERSION,
            edge_id: edge.into(),
            fingerprint: Some(spec().fingerprint()),
            round,
            n_samples: n,
            delta: ParamVec(delta),
        }
    }

    fn open(dir: &Path, quorum: usize) -> AggregatorState {
        let policy = RoundPolicy {
            deadline: Duration::from_secs(10),
            quorum,
            server_lr: 1.0,
        };
        let init = LinkInit::new(spec(), vec![1.0, 2.0, 3.0]).unwrap();
        let edges = vec!["e1".into(), "e2".into(), "e3".into()];
        AggregatorState::open(
            &dir.join("state.json"),
            vec![init],
            edges,
            policy,
            Instant::now(),
        )
        .unwrap()
    }

    #[test]
    fn weighted_mean_when_every_update_has_a_sample_count() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path(), 1);
        let now = Instant::now();
        s.submit(
            "e1",
            "a->b",
            update("e1", 0, vec![1.0, 0.0, 0.0], Some(1)),
            10,
            now,
        )
        .unwrap();
        s.submit(
            "e2",
            "a->b",
            update("e2", 0, vec![0.0, 4.0, 0.0], Some(3)),
            10,
            now,
        )
        .unwrap();
        let acc = s
            .submit(
                "e3",
                "a->b",
                update("e3", 0, vec![0.0, 0.0, 0.0], Some(4)),
                10,
                now,
            )
            .unwrap();
        assert_eq!(acc.closed.as_ref().unwrap().closed_by, ClosedBy::AllEdges);
        let g = s.global("a->b").unwrap();
        assert_eq!(g.round, 1);
        assert_eq!(g.params.0, vec![1.0 + 1.0 / 8.0, 2.0 + 12.0 / 8.0, 3.0]);
    }

    #[test]
    fn deadline_without_quorum_extends_and_keeps_updates() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path(), 2);
        let t0 = Instant::now();
        s.submit(
            "e1",
            "a->b",
            update("e1", 0, vec![3.0, 3.0, 3.0], None),
            10,
            t0,
        )
        .unwrap();
        let ev = s.on_deadlines(t0 + Duration::from_secs(11));
        assert!(matches!(
            ev[..],
            [DeadlineEvent::Extended { updates: 1, .. }]
        ));
        s.submit(
            "e2",
            "a->b",
            update("e2", 0, vec![1.0, 1.0, 1.0], None),
            10,
            t0,
        )
        .unwrap();
        assert!(
            s.on_deadlines(t0 + Duration::from_secs(12)).is_empty(),
            "extended deadline not yet due"
        );
        let ev = s.on_deadlines(t0 + Duration::from_secs(30));
        let DeadlineEvent::Closed { summary, .. } = &ev[0] else {
            panic!("{ev:?}")
        };
        assert_eq!(summary.extensions, 1);
        assert_eq!(s.global("a->b").unwrap().params.0, vec![3.0, 4.0, 5.0]);
    }

    #[test]
    fn resumed_state_must_match_the_init_spec() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path(), 1));
        let other = LinkSpec::new("a->b", "linear", vec![TensorShape::new("w", &[4])]);
        let init = LinkInit::new(other, vec![0.0; 4]).unwrap();
        let policy = RoundPolicy {
            deadline: Duration::from_secs(1),
            quorum: 1,
            server_lr: 1.0,
        };
        let err = AggregatorState::open(
            &dir.path().join("state.json"),
            vec![init],
            vec![],
            policy,
            Instant::now(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("another spec"), "{err}");
    }

    #[test]
    fn a_version_1_state_file_is_resumed_and_rewritten_as_version_2() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        drop(open(dir.path(), 1));
        // The same state as a version 1 writer stored it: no envelope, no checksum.
        let v2: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v2["format_version"], 2);
        let mut v1 = v2["content"].clone();
        v1["format"] = STATE_FORMAT.into();
        v1["format_version"] = 1.into();
        v1["links"][0]["round"] = 4.into();
        std::fs::write(&path, serde_json::to_vec_pretty(&v1).unwrap()).unwrap();
        let state = open(dir.path(), 1);
        assert_eq!(state.links["a->b"].round, 4);
        let again: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(again["format_version"], 2);
        assert_eq!(again["content"]["links"][0]["round"], 4);
    }
}
