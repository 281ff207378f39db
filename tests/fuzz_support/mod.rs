//! A seeded mutation fuzzer for the loaders of outside data, on stable Rust.
//!
//! Each format ([`targets`]) has valid seeds written by the project's own writers or read from
//! its real files, a structure-aware mutator, and a `run` that feeds an input to the real
//! loader. The harness ([`fuzz`]) runs every input on a worker thread under a panic catcher,
//! a time limit and an allocation guard ([`GuardAlloc`], installed as the global allocator by
//! the binary that includes this module): a panic, a hang or an allocation out of proportion
//! with the input is a finding; an error is the expected answer.
//!
//! Used by `tests/fuzz_loaders.rs` (a few thousand inputs per format in CI) and by
//! `examples/fuzz.rs` (long runs: `cargo run --release --example fuzz -- FORMAT --iterations N`).
#![allow(dead_code)]

pub mod mutate;
pub mod targets;

use mutate::Rng;
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One input format and its loader.
pub trait Format: Sync {
    fn name(&self) -> &'static str;
    /// Valid inputs, each of which `run` must accept.
    fn seeds(&self) -> &[Vec<u8>];
    /// A structure-aware edit of `base` (None when `base` cannot be parsed that far).
    fn structured(&self, rng: &mut Rng, base: &[u8]) -> Option<Vec<u8>>;
    /// Feeds `input` to the loader(s); `scratch` is an empty-or-reused private folder. Ok when
    /// the input was accepted, Err with the loader's message when it was refused.
    fn run(&self, input: &[u8], scratch: &Path) -> Result<(), String>;
}

/// Limits of one input.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Wall time after which an input counts as a hang.
    pub time: Duration,
    /// Heap growth (peak minus the level before the input) that counts as unbounded, plus
    /// `alloc_per_byte` per input byte (a parser may well need a hundred bytes of heap for
    /// each byte of a deeply nested document; what it must not do is trust a length field).
    pub alloc_bytes: usize,
    pub alloc_per_byte: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            time: Duration::from_secs(20),
            alloc_bytes: 64 << 20,
            alloc_per_byte: 128,
        }
    }
}

/// Something the loader must never do.
#[derive(Clone, Debug)]
pub struct Finding {
    pub kind: &'static str,
    pub iteration: u64,
    pub detail: String,
    pub input: Vec<u8>,
}

#[derive(Debug, Default)]
pub struct Report {
    pub format: String,
    pub seed: u64,
    pub iterations: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub findings: Vec<Finding>,
    /// Largest heap growth of one input, in bytes.
    pub peak_alloc_growth: usize,
    /// Slowest input.
    pub slowest: Duration,
    pub elapsed: Duration,
}

impl Report {
    /// A one-line summary, then one line per finding.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{}: {} inputs (seed {}), {} accepted, {} rejected, {} findings; peak heap growth {:.1} MiB, slowest input {:.1} ms, {:.1} s",
            self.format,
            self.iterations,
            self.seed,
            self.accepted,
            self.rejected,
            self.findings.len(),
            self.peak_alloc_growth as f64 / (1 << 20) as f64,
            self.slowest.as_secs_f64() * 1e3,
            self.elapsed.as_secs_f64()
        );
        for f in &self.findings {
            s.push_str(&format!(
                "\n  {} at input {}: {} ({} bytes)",
                f.kind,
                f.iteration,
                f.detail,
                f.input.len()
            ));
        }
        s
    }
}

// ----- allocation guard -----------------------------------------------------------------------

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// The input being run, printed when an allocation is refused (the process then aborts).
static CURRENT_INPUT: AtomicU64 = AtomicU64::new(u64::MAX);
/// The bytes of the input being run and a file opened beforehand, so that a refused
/// allocation can still save the input without allocating.
static CURRENT_PTR: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static CURRENT_LEN: AtomicUsize = AtomicUsize::new(0);
static REFUSED_FD: AtomicI32 = AtomicI32::new(-1);
/// Where that file is: `fuzz-refused-input.bin` in the temporary folder.
pub const REFUSED_INPUT_FILE: &str = "fuzz-refused-input.bin";
/// A single allocation above this is refused: no input of at most a MiB justifies it, and
/// refusing keeps a runaway loader from taking the machine down.
const REFUSE_SINGLE: usize = 2 << 30;

/// The system allocator, counting live bytes so the harness can measure each input's peak.
pub struct GuardAlloc;

impl GuardAlloc {
    fn grow(size: usize) {
        let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
        PEAK.fetch_max(live, Ordering::Relaxed);
    }

    fn refuse(size: usize) {
        // No allocation here: format into a stack buffer.
        let mut buf = [0u8; 160];
        let mut n = 0;
        let mut put = |s: &[u8]| {
            for &b in s {
                if n < buf.len() {
                    buf[n] = b;
                    n += 1;
                }
            }
        };
        put(b"\nfuzz: allocation of ");
        put(&decimal(size as u64));
        put(b" bytes refused at input ");
        put(&decimal(CURRENT_INPUT.load(Ordering::Relaxed)));
        put(b" (unbounded allocation); the input is in ");
        put(REFUSED_INPUT_FILE.as_bytes());
        put(b" in the temporary folder; aborting\n");
        let _ = std::io::stderr().write_all(&buf[..n]);
        let fd = REFUSED_FD.load(Ordering::Relaxed);
        let ptr = CURRENT_PTR.load(Ordering::Relaxed);
        if fd >= 0 && !ptr.is_null() {
            use std::os::fd::FromRawFd;
            // SAFETY: the fd was opened by `fuzz` and stays open for the process; the pointer
            // and length describe the input the worker is running, alive until it returns.
            let mut file = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
            let input =
                unsafe { std::slice::from_raw_parts(ptr, CURRENT_LEN.load(Ordering::Relaxed)) };
            let _ = file.write_all(input);
        }
    }
}

fn decimal(mut v: u64) -> [u8; 20] {
    let mut out = [b' '; 20];
    let mut i = out.len();
    loop {
        i -= 1;
        out[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 || i == 0 {
            break;
        }
    }
    out
}

// SAFETY: every call is forwarded to `System` with the same layout; the counters are only
// statistics.
unsafe impl GlobalAlloc for GuardAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > REFUSE_SINGLE {
            Self::refuse(layout.size());
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            Self::grow(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > REFUSE_SINGLE {
            Self::refuse(layout.size());
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            Self::grow(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > REFUSE_SINGLE {
            Self::refuse(new_size);
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            Self::grow(new_size);
        }
        p
    }
}

fn open_refused_file() {
    use std::os::fd::IntoRawFd;
    if REFUSED_FD.load(Ordering::Relaxed) >= 0 {
        return;
    }
    let path = std::env::temp_dir().join(REFUSED_INPUT_FILE);
    if let Ok(f) = std::fs::File::create(path) {
        REFUSED_FD.store(f.into_raw_fd(), Ordering::Relaxed);
    }
}

// ----- panic capture --------------------------------------------------------------------------

/// The message and place of the last panic on a fuzzing worker.
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Replaces the panic hook with one that records the message instead of printing it, for
/// threads named `fuzz-worker` (other threads keep the default report).
fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() == Some("fuzz-worker") {
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(non-string panic)".into());
            let place = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            if let Ok(mut g) = LAST_PANIC.lock() {
                *g = Some(format!("{message} at {place}"));
            }
        } else {
            default(info);
        }
    }));
}

// ----- the loop -------------------------------------------------------------------------------

enum Outcome {
    Accepted,
    Rejected,
    Panicked(String),
}

/// Runs `iterations` inputs of `format`: the seeds unchanged first (each must be accepted),
/// then mutations of the seeds and of accepted mutants, all derived from `seed`. Findings are
/// collected; a hang ends the run at once (its worker cannot be stopped) with the hang as the
/// last finding.
pub fn fuzz(format: &dyn Format, iterations: u64, seed: u64, limits: &Limits) -> Report {
    install_panic_hook();
    open_refused_file();
    let start = Instant::now();
    let mut report = Report {
        format: format.name().to_string(),
        seed,
        ..Report::default()
    };
    let scratch = tempfile::tempdir().expect("a temporary folder for the fuzzer");
    let scratch_path: PathBuf = scratch.path().to_path_buf();
    let seeds = format.seeds();
    let mut rng = Rng::new(seed ^ 0x6d6c_696e_6b21);
    // Accepted mutants: bases that already passed the syntax, so edits of them go deeper.
    let mut corpus: Vec<Vec<u8>> = Vec::new();

    let (to_worker, inputs) = mpsc::sync_channel::<(u64, Vec<u8>)>(0);
    let (to_main, outcomes) = mpsc::channel::<(Outcome, usize, Duration)>();
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("fuzz-worker".into())
            .spawn_scoped(scope, || {
                for (i, input) in inputs {
                    CURRENT_INPUT.store(i, Ordering::Relaxed);
                    CURRENT_LEN.store(input.len(), Ordering::Relaxed);
                    CURRENT_PTR.store(input.as_ptr().cast_mut(), Ordering::Relaxed);
                    let base = LIVE.load(Ordering::Relaxed);
                    PEAK.store(base, Ordering::Relaxed);
                    let t = Instant::now();
                    let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        format.run(&input, &scratch_path)
                    }));
                    let took = t.elapsed();
                    CURRENT_PTR.store(std::ptr::null_mut(), Ordering::Relaxed);
                    let growth = PEAK.load(Ordering::Relaxed).saturating_sub(base);
                    let outcome = match r {
                        Ok(Ok(())) => Outcome::Accepted,
                        Ok(Err(_)) => Outcome::Rejected,
                        Err(_) => Outcome::Panicked(
                            LAST_PANIC
                                .lock()
                                .ok()
                                .and_then(|mut g| g.take())
                                .unwrap_or_else(|| "(panic message lost)".into()),
                        ),
                    };
                    if to_main.send((outcome, growth, took)).is_err() {
                        break;
                    }
                }
            })
            .expect("the fuzzing worker starts");

        for i in 0..iterations {
            let input = if (i as usize) < seeds.len() {
                seeds[i as usize].clone()
            } else {
                next_input(format, &mut rng, seeds, &corpus)
            };
            if to_worker.send((i, input.clone())).is_err() {
                break;
            }
            let Ok((outcome, growth, took)) = outcomes.recv_timeout(limits.time) else {
                report.findings.push(Finding {
                    kind: "hang",
                    iteration: i,
                    detail: format!("no answer within {:?}", limits.time),
                    input,
                });
                report.iterations = i + 1;
                report.elapsed = start.elapsed();
                print_and_exit_on_hang(&report);
            };
            report.iterations = i + 1;
            report.peak_alloc_growth = report.peak_alloc_growth.max(growth);
            report.slowest = report.slowest.max(took);
            if growth > limits.alloc_bytes + limits.alloc_per_byte * input.len() {
                report.findings.push(Finding {
                    kind: "allocation",
                    iteration: i,
                    detail: format!(
                        "heap grew by {:.1} MiB for an input of {} bytes",
                        growth as f64 / (1 << 20) as f64,
                        input.len()
                    ),
                    input: input.clone(),
                });
            }
            match outcome {
                Outcome::Accepted => {
                    report.accepted += 1;
                    if (i as usize) >= seeds.len() && corpus.len() < 64 {
                        corpus.push(input);
                    } else if (i as usize) >= seeds.len() {
                        let at = rng.below(corpus.len());
                        corpus[at] = input;
                    }
                }
                Outcome::Rejected => {
                    report.rejected += 1;
                    if (i as usize) < seeds.len() {
                        let why = format.run(&seeds[i as usize], scratch.path()).err();
                        report.findings.push(Finding {
                            kind: "seed rejected",
                            iteration: i,
                            detail: why.unwrap_or_default(),
                            input,
                        });
                    }
                }
                Outcome::Panicked(detail) => report.findings.push(Finding {
                    kind: "panic",
                    iteration: i,
                    detail,
                    input,
                }),
            }
        }
        drop(to_worker);
    });
    report.elapsed = start.elapsed();
    report
}

fn next_input(
    format: &dyn Format,
    rng: &mut Rng,
    seeds: &[Vec<u8>],
    corpus: &[Vec<u8>],
) -> Vec<u8> {
    let base = if !corpus.is_empty() && rng.one_in(3) {
        rng.pick(corpus)
    } else {
        rng.pick(seeds)
    };
    let structured = if rng.one_in(2) {
        format.structured(rng, base)
    } else {
        None
    };
    let mut out = structured.unwrap_or_else(|| mutate::mutate_bytes(rng, base, seeds));
    // Now and then damage a structure-aware edit at the byte level too.
    if rng.one_in(6) {
        out = mutate::mutate_bytes(rng, &out, seeds);
    }
    out.truncate(mutate::MAX_INPUT);
    out
}

fn print_and_exit_on_hang(report: &Report) -> ! {
    eprintln!("{}", report.summary());
    if let Some(f) = report.findings.last() {
        let path = std::env::temp_dir().join(format!("fuzz-hang-{}.bin", report.format));
        if std::fs::write(&path, &f.input).is_ok() {
            eprintln!("the hanging input is in {}", path.display());
        }
    }
    std::process::exit(3);
}

/// Writes each finding's input to `dir` as `FORMAT-KIND-ITERATION.bin`; returns the paths.
pub fn save_findings(report: &Report, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut paths = Vec::new();
    for f in &report.findings {
        let path = dir.join(format!(
            "{}-{}-{}.bin",
            report.format,
            f.kind.replace(' ', "-"),
            f.iteration
        ));
        std::fs::write(&path, &f.input)?;
        paths.push(path);
    }
    Ok(paths)
}
