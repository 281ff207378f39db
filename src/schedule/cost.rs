//! Costs and budgets in two resources: memory (MB) and inference time per frame (ms).

use super::ModelSet;
use crate::config::BudgetConfig;
use serde::{Deserialize, Serialize};

/// What a model or a link uses while it is loaded and run once per frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// Memory held while loaded, in MB.
    pub memory_mb: f64,
    /// Inference time per frame, in ms.
    pub ms_per_frame: f64,
}

impl Cost {
    pub const ZERO: Cost = Cost {
        memory_mb: 0.0,
        ms_per_frame: 0.0,
    };

    pub fn new(memory_mb: f64, ms_per_frame: f64) -> Self {
        Cost {
            memory_mb,
            ms_per_frame,
        }
    }

    /// `n` times this cost.
    pub fn times(self, n: f64) -> Cost {
        Cost::new(self.memory_mb * n, self.ms_per_frame * n)
    }

    /// Whether both fields are finite and not negative.
    pub fn is_valid(&self) -> bool {
        self.memory_mb.is_finite()
            && self.ms_per_frame.is_finite()
            && self.memory_mb >= 0.0
            && self.ms_per_frame >= 0.0
    }
}

impl std::ops::Add for Cost {
    type Output = Cost;
    fn add(self, o: Cost) -> Cost {
        Cost::new(
            self.memory_mb + o.memory_mb,
            self.ms_per_frame + o.ms_per_frame,
        )
    }
}

impl std::ops::AddAssign for Cost {
    fn add_assign(&mut self, o: Cost) {
        *self = *self + o;
    }
}

impl std::ops::Sub for Cost {
    type Output = Cost;
    fn sub(self, o: Cost) -> Cost {
        Cost::new(
            self.memory_mb - o.memory_mb,
            self.ms_per_frame - o.ms_per_frame,
        )
    }
}

/// Relative slack on budget comparisons, so that sums of costs that equal the budget up to
/// rounding still fit.
const FIT_EPS: f64 = 1e-9;

/// Limits on each resource; `None` leaves a resource unconstrained.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub memory_mb: Option<f64>,
    pub ms_per_frame: Option<f64>,
}

impl From<&BudgetConfig> for Budget {
    fn from(c: &BudgetConfig) -> Self {
        Budget {
            memory_mb: c.memory_mb,
            ms_per_frame: c.ms_per_frame,
        }
    }
}

impl Budget {
    /// A memory-only budget.
    pub fn memory(mb: f64) -> Self {
        Budget {
            memory_mb: Some(mb),
            ms_per_frame: None,
        }
    }

    /// A time-only budget.
    pub fn time(ms_per_frame: f64) -> Self {
        Budget {
            memory_mb: None,
            ms_per_frame: Some(ms_per_frame),
        }
    }

    /// Whether `cost` stays within every constrained resource.
    pub fn fits(&self, cost: Cost) -> bool {
        let ok = |limit: Option<f64>, used: f64| match limit {
            Some(l) => used <= l + FIT_EPS * l.abs().max(1.0),
            None => true,
        };
        ok(self.memory_mb, cost.memory_mb) && ok(self.ms_per_frame, cost.ms_per_frame)
    }

    /// Whether no resource is constrained.
    pub fn is_unbounded(&self) -> bool {
        self.memory_mb.is_none() && self.ms_per_frame.is_none()
    }

    /// One number for a cost: the sum over constrained resources of the cost's share of the
    /// budget (`memory/B_memory + ms/B_ms`). With one resource this is `c / B`, a fixed
    /// multiple of the cost, so ratios of costs (all the activation probability and
    /// gain-per-cost rules use) are the paper's. With no constrained resource it is 0.
    pub fn share(&self, cost: Cost) -> f64 {
        let part = |limit: Option<f64>, used: f64| match limit {
            Some(l) if l > 0.0 => used / l,
            Some(_) if used > 0.0 => f64::INFINITY,
            _ => 0.0,
        };
        part(self.memory_mb, cost.memory_mb) + part(self.ms_per_frame, cost.ms_per_frame)
    }

    /// Whether both limits, when present, are finite and not negative.
    pub fn is_valid(&self) -> bool {
        [self.memory_mb, self.ms_per_frame]
            .into_iter()
            .flatten()
            .all(|l| l.is_finite() && l >= 0.0)
    }
}

/// The costs of a problem: one per model, and the cost of each link network.
///
/// Predicting target `j` from an active set `A` runs the ensemble `h_{A,j}`, made of `|A|`
/// links, so a set `A` over `k` models costs
/// `sum_{i in A} c(f_i) + sum_{j not in A} sum_{i in A} c(g_ij)` (eq. 1's two sums, with
/// `c(h_{A,j}) = sum_{i in A} c(g_ij)`). Each link is charged its own cost (`per_link[i][j]`,
/// its parameter memory and measured time) when `per_link` is given, else every link costs
/// `link`. An empty set costs nothing. Link costs may be zero.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Costs {
    pub models: Vec<Cost>,
    /// The cost of a link without a cost of its own.
    pub link: Cost,
    /// Per source row and target column, that link's cost (empty: every link costs `link`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_link: Vec<Vec<Cost>>,
}

impl Costs {
    /// Model costs with free links.
    pub fn models_only(models: Vec<Cost>) -> Self {
        Costs::uniform(models, Cost::ZERO)
    }

    /// Model costs with every link at `link`.
    pub fn uniform(models: Vec<Cost>, link: Cost) -> Self {
        Costs {
            models,
            link,
            per_link: Vec::new(),
        }
    }

    /// The cost of link `source -> target`.
    pub fn link_cost(&self, source: usize, target: usize) -> Cost {
        self.per_link
            .get(source)
            .and_then(|row| row.get(target))
            .copied()
            .unwrap_or(self.link)
    }

    /// Whether every link has a valid cost.
    pub fn links_valid(&self) -> bool {
        self.link.is_valid() && self.per_link.iter().flatten().all(|c| c.is_valid())
    }

    pub fn n_models(&self) -> usize {
        self.models.len()
    }

    /// Cost of the links that predict the models outside `active` from it.
    pub fn links_for(&self, active: &ModelSet) -> Cost {
        if self.per_link.is_empty() {
            let k = self.models.len();
            let n = active.len();
            return self.link.times((n * k.saturating_sub(n)) as f64);
        }
        let mut total = Cost::ZERO;
        for j in active.complement_iter() {
            for i in active.iter() {
                total += self.link_cost(i, j);
            }
        }
        total
    }

    /// Cost of executing the models of `active` only.
    pub fn models_cost(&self, active: &ModelSet) -> Cost {
        active
            .iter()
            .fold(Cost::ZERO, |acc, m| acc + self.models[m])
    }

    /// Total cost of `active`: its models plus the links predicting the others (eq. 1).
    pub fn set_cost(&self, active: &ModelSet) -> Cost {
        self.models_cost(active) + self.links_for(active)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_checks_every_constrained_resource() {
        let b = Budget {
            memory_mb: Some(100.0),
            ms_per_frame: Some(50.0),
        };
        assert!(b.fits(Cost::new(100.0, 50.0)));
        assert!(!b.fits(Cost::new(100.1, 10.0)));
        assert!(!b.fits(Cost::new(10.0, 50.1)));
        assert!(Budget::memory(10.0).fits(Cost::new(10.0, 1e9)));
        assert!(Budget::default().fits(Cost::new(1e12, 1e12)));
    }

    #[test]
    fn set_cost_counts_models_and_links() {
        let costs = Costs {
            models: vec![
                Cost::new(4600.0, 44.0),
                Cost::new(1500.0, 30.0),
                Cost::new(3700.0, 60.0),
            ],
            link: Cost::new(10.0, 0.5),
            per_link: Vec::new(),
        };
        // {1}: model 1 plus two targets predicted by one link each.
        let a = ModelSet::from_indices(3, [1]);
        assert_eq!(costs.set_cost(&a), Cost::new(1520.0, 31.0));
        // {0, 2}: both models plus one target predicted by a two-link ensemble.
        let a = ModelSet::from_indices(3, [0, 2]);
        assert_eq!(costs.set_cost(&a), Cost::new(8320.0, 105.0));
        assert_eq!(costs.set_cost(&ModelSet::empty(3)), Cost::ZERO);
        assert_eq!(costs.set_cost(&ModelSet::full(3)), Cost::new(9800.0, 134.0));
    }

    #[test]
    fn each_link_is_charged_its_own_cost() {
        let mut costs = Costs::uniform(
            vec![
                Cost::new(10.0, 1.0),
                Cost::new(20.0, 2.0),
                Cost::new(30.0, 3.0),
            ],
            Cost::new(1.0, 0.1),
        );
        let a = ModelSet::from_indices(3, [0]);
        assert_eq!(costs.set_cost(&a), Cost::new(12.0, 1.2));
        costs.per_link = vec![
            vec![Cost::ZERO, Cost::new(5.0, 0.5), Cost::new(0.5, 0.01)],
            vec![Cost::new(2.0, 0.2), Cost::ZERO, Cost::new(3.0, 0.3)],
            vec![Cost::new(4.0, 0.4), Cost::new(6.0, 0.6), Cost::ZERO],
        ];
        let close = |c: Cost, mb: f64, ms: f64| {
            assert!(
                (c.memory_mb - mb).abs() < 1e-9 && (c.ms_per_frame - ms).abs() < 1e-9,
                "{c:?}"
            );
        };
        // {0}: g_01 + g_02.
        close(costs.set_cost(&a), 15.5, 1.51);
        // {0, 1}: target 2 from both, g_02 + g_12.
        close(
            costs.set_cost(&ModelSet::from_indices(3, [0, 1])),
            33.5,
            3.31,
        );
        assert_eq!(costs.link_cost(2, 1), Cost::new(6.0, 0.6));
    }

    #[test]
    fn share_normalises_by_the_budget() {
        let b = Budget {
            memory_mb: Some(200.0),
            ms_per_frame: Some(10.0),
        };
        assert!((b.share(Cost::new(100.0, 5.0)) - 1.0).abs() < 1e-12);
        assert_eq!(Budget::default().share(Cost::new(5.0, 5.0)), 0.0);
    }
}
