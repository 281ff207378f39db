//! Selection: hand-computed objective and activation probability, budgets, the optimum
//! against every heuristic on random instances.

use mlink::config::SelectionPolicy;
use mlink::schedule::simulate::{Instance, ScoreDist};
use mlink::schedule::{
    Budget, Cost, Costs, LinkScores, MatrixScores, ModelSet, OnMisfit, activation_probability,
    gain, mlink as mlink_select, objective, optimal, select, standalone,
};
use rand::{Rng, SeedableRng, rngs::StdRng};

/// The building example: person counting 4.6 GB (model 0), action classification 1.5 GB
/// (model 1), object counting 3.7 GB (model 2), with these link scores (row = source):
///
/// ```text
///          person action object
/// person     -     0.6    0.8
/// action    0.5     -     0.4
/// object    0.7    0.3     -
/// ```
fn building() -> (Costs, MatrixScores) {
    let costs = Costs::models_only(vec![
        Cost::new(4600.0, 44.0),
        Cost::new(1500.0, 30.0),
        Cost::new(3700.0, 60.0),
    ]);
    let scores = MatrixScores::new(
        vec![
            vec![0.0, 0.6, 0.8],
            vec![0.5, 0.0, 0.4],
            vec![0.7, 0.3, 0.0],
        ],
        0.02,
    )
    .unwrap();
    (costs, scores)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn objective_of_the_building_example() {
    let (_, s) = building();
    let set = |m: &[usize]| ModelSet::from_indices(3, m.iter().copied());
    // Nothing runs: nothing is predicted either.
    assert_eq!(objective(&s, &set(&[])), 0.0);
    // {person}: 1 + p(g_01) + p(g_02) = 1 + 0.6 + 0.8 = 2.4, over 3 models.
    assert!(close(objective(&s, &set(&[0])), 2.4 / 3.0));
    // {action}: 1 + 0.5 + 0.4 = 1.9.
    assert!(close(objective(&s, &set(&[1])), 1.9 / 3.0));
    // {object}: 1 + 0.7 + 0.3 = 2.0.
    assert!(close(objective(&s, &set(&[2])), 2.0 / 3.0));
    // {action, object}: 2 + (max(0.5, 0.7) + 0.02) = 2.72.
    assert!(close(objective(&s, &set(&[1, 2])), 2.72 / 3.0));
    // {person, action}: 2 + (max(0.8, 0.4) + 0.02) = 2.82.
    assert!(close(objective(&s, &set(&[0, 1])), 2.82 / 3.0));
    // {person, object}: 2 + (max(0.6, 0.3) + 0.02) = 2.62.
    assert!(close(objective(&s, &set(&[0, 2])), 2.62 / 3.0));
    assert_eq!(objective(&s, &ModelSet::full(3)), 1.0);
}

#[test]
fn activation_probability_of_the_building_example() {
    let (costs, s) = building();
    let ap = activation_probability(&s, &costs, &Budget::memory(5000.0));
    // P1 (out): person (0.6 + 0.8) / 2 = 0.7, action (0.5 + 0.4) / 2 = 0.45,
    //           object (0.7 + 0.3) / 2 = 0.5.
    // P2 (in):  person (0.5 + 0.7) / 2 = 0.6, action (0.6 + 0.3) / 2 = 0.45,
    //           object (0.8 + 0.4) / 2 = 0.6.
    // w = 2 / 1.5, so P = (1 + P1 - P2) * 1.5 / (2 c):
    //   person 1.1 * 1.5 / 9.2 = 0.179348, action 1.0 * 1.5 / 3.0 = 0.5,
    //   object 0.9 * 1.5 / 7.4 = 0.182432.
    let expect = [
        (0.7, 0.6, 1.65 / 9.2),
        (0.45, 0.45, 0.5),
        (0.5, 0.6, 1.35 / 7.4),
    ];
    for (a, (p1, p2, p)) in ap.iter().zip(expect) {
        assert!(close(a.p_out, p1), "{a:?}");
        assert!(close(a.p_in, p2), "{a:?}");
        assert!(close(a.p, p), "{a:?} expected P = {p}");
    }
    // The cheapest model with balanced links reaches the normalised maximum's half: (1+0)/2.
    // Scaling every cost and the budget by the same factor leaves P unchanged.
    let scaled = Costs::models_only(costs.models.iter().map(|c| c.times(3.0)).collect());
    let ap2 = activation_probability(&s, &scaled, &Budget::memory(1.0));
    for (a, b) in ap.iter().zip(&ap2) {
        assert!(close(a.p, b.p));
    }
}

#[test]
fn policies_on_the_building_example() {
    let (costs, s) = building();
    let set = |m: &[usize]| ModelSet::from_indices(3, m.iter().copied());
    // 5 GB: order by P is action, object, person. Action fits (1.5), object would make 5.2:
    // the paper's greedy stops there with {action}, F = 1.9 / 3.
    let b5 = Budget::memory(5000.0);
    let ml = select(SelectionPolicy::Mlink, &costs, &b5, &s).unwrap();
    assert_eq!(ml.active, set(&[1]));
    assert!(close(ml.objective, 1.9 / 3.0));
    assert!(ml.reason.contains("stopped at model 2"), "{}", ml.reason);
    // The optimum alone is {person} (F = 2.4 / 3): every pair exceeds 5 GB.
    let opt = select(SelectionPolicy::Optimal, &costs, &b5, &s).unwrap();
    assert_eq!(opt.active, set(&[0]));
    assert!(close(opt.objective, 0.8));
    let ga = select(SelectionPolicy::Gain, &costs, &b5, &s).unwrap();
    assert_eq!(ga.active, set(&[0]));
    // Standalone: one model, the others score 0.
    let sa = select(SelectionPolicy::Standalone, &costs, &b5, &s).unwrap();
    assert_eq!(sa.active.len(), 1);
    assert!(close(sa.objective, 1.0 / 3.0));

    // 9 GB: the greedy takes action then object (5.2), person would make 9.8: {1, 2}, 2.72/3.
    let b9 = Budget::memory(9000.0);
    let ml = select(SelectionPolicy::Mlink, &costs, &b9, &s).unwrap();
    assert_eq!(ml.active, set(&[1, 2]));
    assert!(close(ml.objective, 2.72 / 3.0));
    // Optimum {person, action} (6.1 GB): 2.82 / 3.
    let opt = select(SelectionPolicy::Optimal, &costs, &b9, &s).unwrap();
    assert_eq!(opt.active, set(&[0, 1]));
    assert!(close(opt.objective, 0.94));
    assert_eq!(
        select(SelectionPolicy::Gain, &costs, &b9, &s)
            .unwrap()
            .active,
        set(&[0, 1])
    );
    let sa = select(SelectionPolicy::Standalone, &costs, &b9, &s).unwrap();
    assert_eq!(sa.active, set(&[1, 2]));
    assert!(close(sa.objective, 2.0 / 3.0));
}

#[test]
fn stop_and_skip_differ_when_a_later_model_fits() {
    // The building models plus a cheap 0.5 GB model whose links predict nothing (out 0) and
    // which the others predict perfectly (in 1.0).
    let mut models = building().0.models;
    models.push(Cost::new(500.0, 1.0));
    let costs = Costs::models_only(models);
    let s = MatrixScores::new(
        vec![
            vec![0.0, 0.6, 0.8, 1.0],
            vec![0.5, 0.0, 0.4, 1.0],
            vec![0.7, 0.3, 0.0, 1.0],
            vec![0.0, 0.0, 0.0, 0.0],
        ],
        0.02,
    )
    .unwrap();
    // P1: person 2.4/3, action 1.9/3, object 2.0/3, new 0.
    // P2: person 1.2/3, action 0.9/3, object 1.2/3, new 1.
    // min c = 0.5 GB, P = (1 + P1 - P2) * 0.5 / (2 c):
    //   person 1.4 * 0.5 / 9.2 = 0.0761, action (4/3) * 0.5 / 3 = 0.2222,
    //   object (3.8/3) * 0.5 / 7.4 = 0.0856, new 0. Order: action, object, person, new.
    let ap = activation_probability(&s, &costs, &Budget::memory(5000.0));
    assert!(close(ap[1].p, 2.0 / 9.0) && close(ap[3].p, 0.0));
    // 5 GB: action (1.5) fits, object (5.2) does not: the paper's greedy stops at {action}.
    let b = Budget::memory(5000.0);
    let stop = mlink_select(&costs, &b, &s, OnMisfit::Stop);
    assert_eq!(stop.active, ModelSet::from_indices(4, [1]));
    // Skipping: person (6.1) does not fit either, the new model (2.0) does.
    let skip = mlink_select(&costs, &b, &s, OnMisfit::Skip);
    assert_eq!(skip.active, ModelSet::from_indices(4, [1, 3]));
    assert!(skip.objective > stop.objective);
}

#[test]
fn budget_below_the_cheapest_model_gives_an_empty_set_and_says_so() {
    let (costs, s) = building();
    for policy in [
        SelectionPolicy::Mlink,
        SelectionPolicy::Gain,
        SelectionPolicy::Optimal,
        SelectionPolicy::Standalone,
    ] {
        let sel = select(policy, &costs, &Budget::memory(1400.0), &s).unwrap();
        assert!(sel.active.is_empty(), "{policy:?}");
        assert_eq!(sel.objective, 0.0);
        assert!(
            sel.reason.contains("below the cheapest model"),
            "{}",
            sel.reason
        );
        // A time budget below the cheapest model too.
        let sel = select(policy, &costs, &Budget::time(29.0), &s).unwrap();
        assert!(sel.active.is_empty() && sel.reason.contains("below the cheapest"));
    }
    // Links make the cheapest model too dear: 1.5 GB plus two 100 MB links exceed 1.6 GB.
    let with_links = Costs {
        models: costs.models.clone(),
        link: Cost::new(100.0, 0.0),
        per_link: Vec::new(),
    };
    let sel = select(
        SelectionPolicy::Mlink,
        &with_links,
        &Budget::memory(1600.0),
        &s,
    )
    .unwrap();
    assert!(sel.active.is_empty() && sel.reason.contains("with its links"));
    // Standalone ignores links: the action model fits.
    let sel = select(
        SelectionPolicy::Standalone,
        &with_links,
        &Budget::memory(1600.0),
        &s,
    )
    .unwrap();
    assert_eq!(sel.active, ModelSet::from_indices(3, [1]));
}

#[test]
fn bad_input_is_an_error() {
    let (costs, s) = building();
    let bad = Costs::models_only(vec![Cost::new(-1.0, 0.0); 3]);
    assert!(select(SelectionPolicy::Mlink, &bad, &Budget::memory(1.0), &s).is_err());
    let short = Costs::models_only(vec![Cost::new(1.0, 0.0); 2]);
    assert!(select(SelectionPolicy::Gain, &short, &Budget::memory(1.0), &s).is_err());
    assert!(
        select(
            SelectionPolicy::Mlink,
            &costs,
            &Budget::memory(f64::NAN),
            &s
        )
        .is_err()
    );
    let mut rng = StdRng::seed_from_u64(1);
    let big = Instance::random(30, ScoreDist::Normal, 0.02, &mut rng);
    let err = select(
        SelectionPolicy::Optimal,
        &big.costs,
        &big.budget_at(0.5),
        &big.scores,
    )
    .unwrap_err();
    assert!(err.to_string().contains("at most 24"));
}

/// Matrix scores behind the generic interface only, to check the incremental paths against
/// the plain one.
struct Generic(MatrixScores);

impl LinkScores for Generic {
    fn n_models(&self) -> usize {
        self.0.n_models()
    }
    fn link(&self, s: usize, t: usize) -> f64 {
        self.0.link(s, t)
    }
    fn ensemble(&self, a: &ModelSet, t: usize) -> f64 {
        self.0.ensemble(a, t)
    }
}

/// A random problem with varied budgets: memory only, time only, or both, and sometimes
/// costly links.
fn random_problem(rng: &mut StdRng, i: usize) -> (Costs, MatrixScores, Budget) {
    let dist = if i.is_multiple_of(2) {
        ScoreDist::Normal
    } else {
        ScoreDist::Beta
    };
    let k = rng.random_range(2..=10);
    let inst = Instance::random(k, dist, 0.02, rng);
    let models: Vec<Cost> = inst
        .costs
        .models
        .iter()
        .map(|c| Cost::new(c.memory_mb, rng.random_range(0.01..1.0)))
        .collect();
    let link = if i.is_multiple_of(3) {
        Cost::new(rng.random_range(0.0..0.02), rng.random_range(0.0..0.02))
    } else {
        Cost::ZERO
    };
    let total: Cost = models.iter().fold(Cost::ZERO, |a, &c| a + c);
    let t: f64 = rng.random_range(0.0..1.1);
    let budget = match i % 3 {
        0 => Budget::memory(total.memory_mb * t),
        1 => Budget::time(total.ms_per_frame * t),
        _ => Budget {
            memory_mb: Some(total.memory_mb * t),
            ms_per_frame: Some(total.ms_per_frame * rng.random_range(0.0..1.1)),
        },
    };
    (Costs::uniform(models, link), inst.scores, budget)
}

#[test]
fn the_optimum_is_never_beaten_and_every_selection_fits() {
    let mut rng = StdRng::seed_from_u64(7);
    for i in 0..400 {
        let (costs, scores, budget) = random_problem(&mut rng, i);
        let k = costs.n_models();
        let opt = select(SelectionPolicy::Optimal, &costs, &budget, &scores).unwrap();
        // Brute force over every mask with the plain objective: the enumeration is exact.
        let mut brute = 0.0f64;
        for mask in 0u64..(1 << k) {
            let set = ModelSet::from_mask(k, mask);
            if budget.fits(costs.set_cost(&set)) {
                brute = brute.max(objective(&scores, &set));
            }
        }
        assert!(
            (opt.objective - brute).abs() < 1e-9,
            "instance {i}: {} vs {brute}",
            opt.objective
        );
        for policy in [
            SelectionPolicy::Mlink,
            SelectionPolicy::Gain,
            SelectionPolicy::Standalone,
        ] {
            let sel = select(policy, &costs, &budget, &scores).unwrap();
            // Standalone solves another problem (no links, so no link costs): its set is one
            // of eq. 1's candidates only when links are free.
            if policy != SelectionPolicy::Standalone || costs.link == Cost::ZERO {
                assert!(
                    sel.objective <= opt.objective + 1e-9,
                    "instance {i}: {policy:?} beat the optimum"
                );
            }
            let used = if policy == SelectionPolicy::Standalone {
                costs.models_cost(&sel.active)
            } else {
                costs.set_cost(&sel.active)
            };
            assert!(
                budget.fits(used),
                "instance {i}: {policy:?} breaks {budget:?} with {used:?}"
            );
            assert!(budget.fits(sel.cost));
            if policy != SelectionPolicy::Standalone {
                assert!((sel.objective - objective(&scores, &sel.active)).abs() < 1e-9);
            }
        }
        let skip = mlink_select(&costs, &budget, &scores, OnMisfit::Skip);
        assert!(
            skip.objective <= opt.objective + 1e-9 && budget.fits(costs.set_cost(&skip.active))
        );
        assert!(budget.fits(opt.cost) && budget.fits(costs.set_cost(&opt.active)));
    }
}

#[test]
fn incremental_and_generic_scores_agree() {
    let mut rng = StdRng::seed_from_u64(11);
    for i in 0..60 {
        let (costs, scores, budget) = random_problem(&mut rng, i);
        let generic = Generic(scores.clone());
        let a = optimal(&costs, &budget, &scores);
        let b = optimal(&costs, &budget, &generic);
        assert!((a.objective - b.objective).abs() < 1e-9);
        let a = gain(&costs, &budget, &scores);
        let b = gain(&costs, &budget, &generic);
        assert_eq!(a.active, b.active, "instance {i}");
        let a = mlink_select(&costs, &budget, &scores, OnMisfit::Stop);
        let b = mlink_select(&costs, &budget, &generic, OnMisfit::Stop);
        assert_eq!(a.active, b.active);
        assert_eq!(
            standalone(&costs, &budget).active.len() as f64 / costs.n_models() as f64,
            standalone(&costs, &budget).objective
        );
    }
}

#[test]
fn large_sets_select_within_budget() {
    let mut rng = StdRng::seed_from_u64(3);
    let inst = Instance::random(150, ScoreDist::Beta, 0.02, &mut rng);
    let b = inst.budget_at(0.3);
    for policy in [
        SelectionPolicy::Mlink,
        SelectionPolicy::Gain,
        SelectionPolicy::Standalone,
    ] {
        let sel = select(policy, &inst.costs, &b, &inst.scores).unwrap();
        assert!(b.fits(sel.cost) && !sel.active.is_empty());
        assert!(
            sel.active.iter().any(|m| m >= 64),
            "the set spans more than one word"
        );
    }
}
