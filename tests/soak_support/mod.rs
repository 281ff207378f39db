//! The soak: N RTSP cameras (`mlink serve-rtsp` looping real footage), `mlink run` on them
//! under a one-model budget with links and online training, sampled every few seconds (RSS,
//! open file descriptors, threads, `/metrics`, the sink), then checked record by record.
//! Writes `report.json` (format `mlink-soak-report`, version 1) and `report.svg` (RSS and frame
//! latency over time) to its folder.
//!
//! Used by `examples/soak.rs` (`scripts/soak.sh`: 8 cameras, 30 minutes) and `tests/soak.rs`
//! (2 cameras, 2 minutes).
#![allow(dead_code)]

#[path = "../pipeline_support/mod.rs"]
mod pipeline_support;

use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const REPORT_FORMAT: &str = "mlink-soak-report";
pub const REPORT_VERSION: u32 = 1;
/// Models in the soak pipeline (each served frame must have one record per model).
pub const MODELS: usize = 3;
/// Frames each camera's queue holds (frames still queued at the stop are neither served nor
/// dropped).
pub const QUEUE: usize = 4;

#[derive(Clone, Debug, Serialize)]
pub struct SoakConfig {
    pub cameras: usize,
    pub duration_s: u64,
    pub sample_every_s: u64,
    /// RSS growth is measured from the first sample at or after this time.
    pub warm_s: u64,
    pub fps: f64,
    pub mlink: PathBuf,
    pub footage: PathBuf,
    pub models_dir: PathBuf,
    pub out_dir: PathBuf,
}

/// One sample of the engine process and its metrics.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Sample {
    pub t_s: f64,
    pub rss_mb: f64,
    pub fds: u64,
    pub threads: u64,
    pub frames_ingested: f64,
    pub frames_dropped: f64,
    pub sink_records: f64,
    pub sink_dropped: f64,
    pub reconnects: f64,
    pub model_executions: f64,
    pub model_predictions: f64,
    pub link_training_runs: f64,
    pub sink_lines: u64,
    /// Frame latency quantiles over the frames finished since the previous sample (seconds).
    pub latency_p50_s: Option<f64>,
    pub latency_p99_s: Option<f64>,
    /// Cumulative frame-latency histogram: (upper bound, count).
    #[serde(skip)]
    pub latency_buckets: Vec<(f64, f64)>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub ran_s: f64,
    /// The engine exited before it was asked to stop (or failed to stop cleanly).
    pub crashed: bool,
    pub exit: String,
    pub frames_ingested: u64,
    pub frames_dropped: u64,
    /// Distinct (camera, seq) frames in the sink.
    pub frames_served: u64,
    /// Frames neither served nor counted dropped (at most the queued frames at the stop).
    pub frames_unaccounted: i64,
    pub records: u64,
    /// Served frames without exactly one record per model.
    pub frames_with_lost_records: u64,
    pub sink_dropped: u64,
    pub exact_records: u64,
    /// Records not exact: predicted by links (or unavailable, with the reason).
    pub predicted_records: u64,
    pub reconnects: u64,
    pub link_training_runs: u64,
    pub rss_first_mb: f64,
    pub rss_warm_mb: f64,
    pub rss_last_mb: f64,
    pub rss_max_mb: f64,
    /// (last - warm) / warm.
    pub rss_growth_after_warm: f64,
    pub fds_first: u64,
    pub fds_last: u64,
    pub threads_first: u64,
    pub threads_last: u64,
    pub latency_p50_s: Option<f64>,
    pub latency_p99_s: Option<f64>,
    pub latency_mean_s: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub format: &'static str,
    pub format_version: u32,
    pub config: SoakConfig,
    pub summary: Summary,
    pub samples: Vec<Sample>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn wait_port(port: u16, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Kills a child process on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pipeline(cfg: &SoakConfig, ports: &[u16], metrics_port: u16) -> String {
    let cameras: String = ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            format!(
                "  - id: cam{i}\n    uri: rtsp://127.0.0.1:{p}/cam\n    sampling: {{ fps: {} }}\n    queue: {QUEUE}\n",
                cfg.fps
            )
        })
        .collect();
    let model_entries =
        pipeline_support::model_entries(&cfg.models_dir, &["centernet", "nanodet", "movenet"]);
    format!(
        r#"version: 1
cameras:
{cameras}
models:
{model_entries}links:
  warmup_samples: 30
  seed: 7
scheduler:
  budget: {{ memory_mb: 30 }}
  period_s: 30
  profiling_ratio: 0.1
adaptation:
  policy: periodic
sinks:
  - kind: jsonl
    path: out.jsonl
metrics:
  listen: 127.0.0.1:{metrics_port}
"#
    )
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// The sum of every series of `name` (any labels).
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The cumulative buckets of histogram `name`, summed over its series.
fn histogram(text: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    let mut by_le: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for l in text.lines().filter(|l| l.starts_with(&prefix)) {
        let Some(le) = l.split("le=\"").nth(1).and_then(|r| r.split('"').next()) else {
            continue;
        };
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::NAN)
        };
        let Some(v) = l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        let e = by_le.entry(le.to_bits()).or_insert((le, 0.0));
        e.1 += v;
    }
    let mut v: Vec<(f64, f64)> = by_le.into_values().collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

/// Quantile `q` of cumulative buckets (linear within a bucket; the last finite bound for
/// the +Inf bucket).
pub fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let want = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, c) in buckets {
        if c >= want {
            if !le.is_finite() {
                return Some(prev.0);
            }
            let span = c - prev.1;
            let f = if span > 0.0 {
                (want - prev.1) / span
            } else {
                1.0
            };
            return Some(prev.0 + f * (le - prev.0));
        }
        prev = (le, c);
    }
    Some(prev.0)
}

fn diff(a: &[(f64, f64)], b: &[(f64, f64)]) -> Vec<(f64, f64)> {
    b.iter()
        .map(|&(le, c)| {
            let before = a
                .iter()
                .find(|(l, _)| l.to_bits() == le.to_bits())
                .map_or(0.0, |x| x.1);
            (le, c - before)
        })
        .collect()
}

fn proc_status(pid: u32) -> (f64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    (field("VmRSS:") / 1024.0, field("Threads:") as u64)
}

fn count_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}

fn count_lines(path: &Path) -> u64 {
    std::fs::read(path).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count() as u64)
}

/// Runs the soak and writes its report; returns it.
pub fn run(mut cfg: SoakConfig) -> Report {
    std::fs::create_dir_all(&cfg.out_dir).expect("the soak folder can be created");
    // The engine runs in the soak folder: every path it is given must be absolute.
    for p in [
        &mut cfg.out_dir,
        &mut cfg.mlink,
        &mut cfg.footage,
        &mut cfg.models_dir,
    ] {
        *p = std::fs::canonicalize(&*p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    }
    let log = |name: &str| {
        std::fs::File::create(cfg.out_dir.join(name)).expect("a log file can be created")
    };
    // Cameras.
    let ports: Vec<u16> = (0..cfg.cameras).map(|_| free_port()).collect();
    let _servers: Vec<Guard> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let child = Command::new(&cfg.mlink)
                .arg("serve-rtsp")
                .arg(&cfg.footage)
                .args(["--port", &port.to_string(), "--mount", "/cam"])
                .stdout(Stdio::null())
                .stderr(log(&format!("camera{i}.log")))
                .spawn()
                .expect("mlink serve-rtsp starts");
            let g = Guard(child);
            assert!(
                wait_port(*port, Duration::from_secs(30)),
                "camera {i} never listened"
            );
            g
        })
        .collect();

    // The engine.
    let metrics_port = free_port();
    let pipeline_path = cfg.out_dir.join("pipeline.yaml");
    std::fs::write(&pipeline_path, pipeline(&cfg, &ports, metrics_port))
        .expect("the pipeline can be written");
    let sink = cfg.out_dir.join("out.jsonl");
    let _ = std::fs::remove_file(&sink);
    let start = Instant::now();
    let mut engine = Command::new(&cfg.mlink)
        .arg("run")
        .arg(&pipeline_path)
        .arg("--links-out")
        .arg(cfg.out_dir.join("links.bundle"))
        .args(["--reload-check", "0", "--summary-json"])
        .current_dir(&cfg.out_dir)
        .env("RUST_LOG", "info")
        .stdout(log("summary.json"))
        .stderr(log("engine.log"))
        .spawn()
        .expect("mlink run starts");
    let pid = engine.id();

    let mut samples: Vec<Sample> = Vec::new();
    let mut crashed = false;
    let mut exit = String::new();
    let end = start + Duration::from_secs(cfg.duration_s);
    let mut next = start + Duration::from_secs(cfg.sample_every_s);
    while Instant::now() < end {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        next += Duration::from_secs(cfg.sample_every_s);
        if let Ok(Some(status)) = engine.try_wait() {
            crashed = true;
            exit = format!(
                "exited by itself after {:.0} s: {status}",
                start.elapsed().as_secs_f64()
            );
            break;
        }
        let (rss_mb, threads) = proc_status(pid);
        let text = http_get(metrics_port, "/metrics").unwrap_or_default();
        let buckets = histogram(&text, "mlink_frame_seconds");
        let (p50, p99) = match samples.last() {
            Some(prev) => {
                let d = diff(&prev.latency_buckets, &buckets);
                (quantile(&d, 0.5), quantile(&d, 0.99))
            }
            None => (quantile(&buckets, 0.5), quantile(&buckets, 0.99)),
        };
        let s = Sample {
            t_s: start.elapsed().as_secs_f64(),
            rss_mb,
            fds: count_fds(pid),
            threads,
            frames_ingested: metric_sum(&text, "mlink_frames_ingested_total"),
            frames_dropped: metric_sum(&text, "mlink_frames_dropped_total"),
            sink_records: metric_sum(&text, "mlink_sink_records_total"),
            sink_dropped: metric_sum(&text, "mlink_sink_dropped_total"),
            reconnects: metric_sum(&text, "mlink_source_reconnects_total"),
            model_executions: metric_sum(&text, "mlink_model_executions_total"),
            model_predictions: metric_sum(&text, "mlink_model_predictions_total"),
            link_training_runs: metric_sum(&text, "mlink_link_training_runs_total"),
            sink_lines: count_lines(&sink),
            latency_p50_s: p50,
            latency_p99_s: p99,
            latency_buckets: buckets,
        };
        eprintln!(
            "soak t={:>5.0}s rss={:.0}MB fds={} threads={} ingested={} dropped={} records={} p99={:?}",
            s.t_s,
            s.rss_mb,
            s.fds,
            s.threads,
            s.frames_ingested,
            s.frames_dropped,
            s.sink_lines,
            s.latency_p99_s
        );
        samples.push(s);
    }
    let ran_s = start.elapsed().as_secs_f64();
    let final_metrics = http_get(metrics_port, "/metrics").unwrap_or_default();

    // Stop: SIGINT, as an operator would; the engine must exit cleanly.
    if !crashed {
        let _ = Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            match engine.try_wait() {
                Ok(Some(status)) => {
                    exit = format!("stopped by SIGINT: {status}");
                    crashed = !status.success();
                    break;
                }
                _ if Instant::now() > deadline => {
                    let _ = engine.kill();
                    let _ = engine.wait();
                    exit = "did not stop within 90 s of SIGINT; killed".into();
                    crashed = true;
                    break;
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
    // Already reaped on every path above; this returns its status at once.
    let _ = engine.wait();
    let summary = summarise(&cfg, &samples, &final_metrics, &sink, ran_s, crashed, exit);
    let report = Report {
        format: REPORT_FORMAT,
        format_version: REPORT_VERSION,
        config: cfg,
        summary,
        samples,
    };
    write_report(&report);
    report
}

fn summarise(
    cfg: &SoakConfig,
    samples: &[Sample],
    final_metrics: &str,
    sink: &Path,
    ran_s: f64,
    crashed: bool,
    exit: String,
) -> Summary {
    // Every record in the sink (the current file and any rotated ones).
    let mut per_frame: BTreeMap<(String, u64), Vec<String>> = BTreeMap::new();
    let (mut records, mut exact, mut predicted) = (0u64, 0u64, 0u64);
    let mut files = vec![sink.to_path_buf()];
    for i in 1..=5 {
        files.push(PathBuf::from(format!("{}.{i}", sink.display())));
    }
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        for line in text.lines() {
            let Ok(r) = serde_json::from_str::<mlink::engine::record::OutputRecord>(line) else {
                continue; // a torn or foreign line: its frame then lacks a record
            };
            records += 1;
            if r.is_exact() {
                exact += 1;
            } else {
                predicted += 1;
            }
            let (cam, seq, model) = (r.camera, r.seq, r.model);
            per_frame.entry((cam, seq)).or_default().push(model);
        }
    }
    let lost = per_frame
        .values()
        .filter(|models| {
            let mut m = (*models).clone();
            m.sort();
            m.dedup();
            models.len() != MODELS || m.len() != MODELS
        })
        .count() as u64;
    let served = per_frame.len() as u64;
    // The engine's own totals at its exit (frames still held when it stopped count as
    // dropped there); the last scrape when it printed none (it crashed).
    let at_exit: Option<serde_json::Value> = std::fs::read(cfg.out_dir.join("summary.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let total = |key: &str, metric: &str| {
        at_exit
            .as_ref()
            .and_then(|v| v[key].as_u64())
            .unwrap_or_else(|| metric_sum(final_metrics, metric) as u64)
    };
    let ingested = total("frames_ingested", "mlink_frames_ingested_total");
    let dropped = total("frames_dropped", "mlink_frames_dropped_total");
    let buckets = histogram(final_metrics, "mlink_frame_seconds");
    let lat_sum = metric_sum(final_metrics, "mlink_frame_seconds_sum");
    let lat_count = metric_sum(final_metrics, "mlink_frame_seconds_count");
    let warm = samples
        .iter()
        .find(|s| s.t_s >= cfg.warm_s as f64)
        .or(samples.last());
    let first = samples.first();
    let last = samples.last();
    let rss_warm = warm.map_or(0.0, |s| s.rss_mb);
    let rss_last = last.map_or(0.0, |s| s.rss_mb);
    Summary {
        ran_s,
        crashed,
        exit,
        frames_ingested: ingested,
        frames_dropped: dropped,
        frames_served: served,
        frames_unaccounted: ingested as i64 - dropped as i64 - served as i64,
        records,
        frames_with_lost_records: lost,
        sink_dropped: metric_sum(final_metrics, "mlink_sink_dropped_total") as u64,
        exact_records: exact,
        predicted_records: predicted,
        reconnects: metric_sum(final_metrics, "mlink_source_reconnects_total") as u64,
        link_training_runs: metric_sum(final_metrics, "mlink_link_training_runs_total") as u64,
        rss_first_mb: first.map_or(0.0, |s| s.rss_mb),
        rss_warm_mb: rss_warm,
        rss_last_mb: rss_last,
        rss_max_mb: samples.iter().map(|s| s.rss_mb).fold(0.0, f64::max),
        rss_growth_after_warm: if rss_warm > 0.0 {
            (rss_last - rss_warm) / rss_warm
        } else {
            0.0
        },
        fds_first: first.map_or(0, |s| s.fds),
        fds_last: last.map_or(0, |s| s.fds),
        threads_first: first.map_or(0, |s| s.threads),
        threads_last: last.map_or(0, |s| s.threads),
        latency_p50_s: quantile(&buckets, 0.5),
        latency_p99_s: quantile(&buckets, 0.99),
        latency_mean_s: (lat_count > 0.0).then(|| lat_sum / lat_count),
    }
}

fn write_report(report: &Report) {
    let dir = &report.config.out_dir;
    let json = serde_json::to_vec_pretty(report).expect("the report serialises");
    mlink::fsutil::write_atomic(&dir.join("report.json"), &json).expect("report.json");
    if let Err(e) = plot(report, &dir.join("report.svg")) {
        eprintln!("cannot draw report.svg: {e}");
    }
}

/// RSS (MB) and frame latency (p50, p99 per sampling interval) against time.
fn plot(report: &Report, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let s = &report.samples;
    let t_max = s.last().map_or(1.0, |x| x.t_s).max(1.0);
    let rss_max = s.iter().map(|x| x.rss_mb).fold(1.0, f64::max) * 1.1;
    let lat_max = s.iter().filter_map(|x| x.latency_p99_s).fold(0.1, f64::max) * 1.1;
    let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(300);
    let title = format!(
        "mlink soak: {} cameras, {:.0} min",
        report.config.cameras,
        report.summary.ran_s / 60.0
    );
    let mut c = ChartBuilder::on(&top)
        .caption(title, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..t_max, 0.0..rss_max)?;
    c.configure_mesh()
        .x_desc("time (s)")
        .y_desc("RSS (MB)")
        .draw()?;
    c.draw_series(LineSeries::new(s.iter().map(|x| (x.t_s, x.rss_mb)), &BLUE))?
        .label("RSS")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    c.configure_series_labels().border_style(BLACK).draw()?;
    let mut c = ChartBuilder::on(&bottom)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..t_max, 0.0..lat_max)?;
    c.configure_mesh()
        .x_desc("time (s)")
        .y_desc("frame latency (s)")
        .draw()?;
    c.draw_series(LineSeries::new(
        s.iter().filter_map(|x| Some((x.t_s, x.latency_p99_s?))),
        &RED,
    ))?
    .label("p99")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    c.draw_series(LineSeries::new(
        s.iter().filter_map(|x| Some((x.t_s, x.latency_p50_s?))),
        &GREEN,
    ))?
    .label("p50")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
    c.configure_series_labels().border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}
