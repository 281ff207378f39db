use crate::link::bench::{
    choose_wide_label, seq2vec_link, six_source_bundle, train_vec2vec, vec2vec_workload,
    wide_label_link,
};
use std::process::ExitCode;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
}

/// CPU time consumed by the calling thread, in seconds (None where the platform lacks it).
/// On a shared machine the wall time includes waiting for a core; the CPU time does not.
fn thread_cpu_s() -> Option<f64> {
    #[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
    {
        #[repr(C)]
        struct Timespec {
            sec: i64,
            nsec: i64,
        }
        const CLOCK_THREAD_CPUTIME_ID: std::ffi::c_int = 3;
        unsafe extern "C" {
            fn clock_gettime(clock: std::ffi::c_int, ts: *mut Timespec) -> std::ffi::c_int;
        }
        let mut ts = Timespec { sec: 0, nsec: 0 };
        // SAFETY: clock_gettime writes one timespec to the valid pointer it is given.
        let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        (rc == 0).then_some(ts.sec as f64 + ts.nsec as f64 * 1e-9)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64")))]
    {
        None
    }
}

/// A figure: median wall and median thread CPU time per call, in seconds.
#[derive(Clone, Copy)]
struct Figure {
    wall: f64,
    cpu: Option<f64>,
}

/// Median times of `f` over `runs` runs, each of `calls` calls, per call.
fn measure(runs: usize, calls: usize, mut f: impl FnMut()) -> Figure {
    let mut wall = Vec::with_capacity(runs);
    let mut cpu = Vec::with_capacity(runs);
    for _ in 0..runs {
        let (s, c) = (Instant::now(), thread_cpu_s());
        for _ in 0..calls {
            f();
        }
        wall.push(s.elapsed().as_secs_f64() / calls as f64);
        if let (Some(a), Some(b)) = (c, thread_cpu_s()) {
            cpu.push((b - a) / calls as f64);
        }
    }
    let med = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    Figure {
        wall: med(wall).unwrap_or(f64::NAN),
        cpu: med(cpu),
    }
}

/// Times link training and prediction on the current thread (one core).
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let train = measure(3, 1, || {
        std::hint::black_box(train_vec2vec(100));
    });
    let net = train_vec2vec(1);
    let (_, xs, _) = vec2vec_workload();
    let mut n = 0;
    let vec = measure(5, 1000, || {
        std::hint::black_box(net.predict(&xs[n % xs.len()]).ok());
        n += 1;
    });
    let (bundle, active) = six_source_bundle();
    let act: Vec<(usize, &crate::output::OutputValue)> =
        active.iter().map(|(i, v)| (*i, v)).collect();
    let ens = measure(5, 200, || {
        std::hint::black_box(bundle.predict(0, &act).ok());
    });
    let (seq, input) = seq2vec_link();
    let seq = measure(5, 200, || {
        std::hint::black_box(seq.predict(&input).ok());
    });
    let wide = wide_label_link();
    let choice = measure(3, 1, || {
        std::hint::black_box(choose_wide_label(&wide).map(|c| c.held_out));
    });
    let profile = if cfg!(debug_assertions) {
        "dev"
    } else {
        "release"
    };
    if args.json {
        let cpu = |f: Figure, scale: f64| f.cpu.map(|c| c * scale);
        println!(
            "{}",
            serde_json::json!({
                "profile": profile,
                "train_vec2vec_80_160_80_800x100_s": train.wall,
                "train_vec2vec_80_160_80_800x100_cpu_s": cpu(train, 1.0),
                "predict_vec2vec_us": vec.wall * 1e6,
                "predict_vec2vec_cpu_us": cpu(vec, 1e6),
                "predict_ensemble_6_sources_us": ens.wall * 1e6,
                "predict_ensemble_6_sources_cpu_us": cpu(ens, 1e6),
                "predict_seq2vec_20_tokens_us": seq.wall * 1e6,
                "predict_seq2vec_20_tokens_cpu_us": cpu(seq, 1e6),
                "choose_link_to_1000_class_label_80_pairs_s": choice.wall,
                "choose_link_to_1000_class_label_80_pairs_cpu_s": cpu(choice, 1.0),
            })
        );
    } else {
        let line = |what: &str, f: Figure, scale: f64, unit: &str, target: &str| {
            let cpu = f.cpu.map_or(String::new(), |c| {
                format!(", thread CPU {:.3} {unit}", c * scale)
            });
            println!(
                "{what}: {:.3} {unit} wall{cpu} (target <= {target} {unit})",
                f.wall * scale
            );
        };
        println!("profile: {profile} (one thread; wall time includes waiting for a shared core)");
        line(
            "train vec2vec 80-160-80, 800 samples, batch 32, 100 epochs",
            train,
            1.0,
            "s",
            "0.3",
        );
        line("predict vec2vec, one sample", vec, 1e6, "us", "20");
        line("predict six-source ensemble", ens, 1e6, "us", "100");
        line("predict seq2vec, 20 tokens", seq, 1e6, "us", "200");
        line(
            "choose a link to a 1,000-class label, 80 pairs, every candidate",
            choice,
            1.0,
            "s",
            "1",
        );
    }
    Ok(ExitCode::SUCCESS)
}
