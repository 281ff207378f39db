//! Every loader of outside data refuses damaged input with an error: a few thousand seeded,
//! deterministic mutations per format (see `tests/fuzz_support`), none of which may panic,
//! hang or allocate out of proportion. Long runs: `cargo run --release --example fuzz`.

mod fuzz_support;

use fuzz_support::{GuardAlloc, Limits, fuzz, targets};

#[global_allocator]
static ALLOC: GuardAlloc = GuardAlloc;

/// Inputs per format in CI (the seeds included).
const CI_INPUTS: u64 = 2000;

fn check(format: &str) {
    let f = targets::build(format).expect("a known format");
    let report = fuzz(f.as_ref(), CI_INPUTS, 16, &Limits::default());
    println!("{}", report.summary());
    assert_eq!(report.iterations, CI_INPUTS);
    assert!(report.findings.is_empty(), "{}", report.summary());
    // The mutations must reach past the syntax: some damaged inputs are still accepted (they
    // are valid files), most are refused.
    assert!(report.rejected > 0 && report.accepted >= f.seeds().len() as u64);
}

#[test]
fn pipeline_files() {
    check("pipeline");
}

#[test]
fn traces() {
    check("trace");
}

/// The bundle loader checks the manifest against the tensors and the specs before it
/// allocates (an ensemble `dims` of 2147483647 once made loading allocate 8 GiB).
#[test]
fn link_bundles() {
    check("bundle");
}

#[test]
fn oracle_links() {
    check("oracle");
}

#[test]
fn aggregator_state_and_link_files() {
    check("state");
}

#[test]
fn tokens_files() {
    check("tokens");
}

#[test]
fn label_files() {
    check("labels");
}

#[test]
fn aggregator_http_bodies() {
    check("http");
}

/// The harness itself: a loader that panics on some inputs and allocates without bound on
/// others is reported, with the inputs that did it.
#[test]
fn the_harness_reports_panics_and_unbounded_allocations() {
    use fuzz_support::Format;
    use fuzz_support::mutate::Rng;
    use std::path::Path;

    struct Fragile(Vec<Vec<u8>>);
    impl Format for Fragile {
        fn name(&self) -> &'static str {
            "fragile"
        }
        fn seeds(&self) -> &[Vec<u8>] {
            &self.0
        }
        fn structured(&self, _: &mut Rng, _: &[u8]) -> Option<Vec<u8>> {
            None
        }
        fn run(&self, input: &[u8], _: &Path) -> Result<(), String> {
            match input.first() {
                Some(b'p') => Ok(()),
                Some(0) => panic!("a zero byte"),
                Some(0xff) => {
                    // Trusts a length from the input, as a careless loader would.
                    let v = vec![1u8; 100 << 20];
                    Err(format!("{}", v.len()))
                }
                _ => Err("refused".into()),
            }
        }
    }
    let f = Fragile(vec![b"plain".to_vec()]);
    let report = fuzz(&f, 3000, 7, &Limits::default());
    let kinds: std::collections::BTreeSet<&str> = report.findings.iter().map(|x| x.kind).collect();
    assert!(kinds.contains("panic"), "{}", report.summary());
    assert!(kinds.contains("allocation"), "{}", report.summary());
    assert!(
        report
            .findings
            .iter()
            .all(|x| (x.kind == "panic") == (x.input.first() == Some(&0)))
    );
}
