//! The JSON-lines sink on a full disk: a 64 KiB tmpfs when the machine lets the tests mount
//! one (root), otherwise a write error injected through `/dev/full`. Writes that do not fit
//! are reported and counted as dropped, the sink keeps taking batches, every line on disk is
//! whole, and an earlier rotated file is untouched; once space is freed, writing resumes.

mod tools_support;

use mlink::engine::record::{OutputRecord, Provenance, RECORD_VERSION};
use mlink::engine::sink::{JsonlSink, SinkSet};
use mlink::metrics::Metrics;
use mlink::output::OutputValue;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

fn record(seq: u64) -> OutputRecord {
    OutputRecord {
        v: RECORD_VERSION,
        camera: "lobby".into(),
        seq,
        pts_s: Some(seq as f64 * 0.2),
        time: 1.5,
        model: "centernet".into(),
        provenance: Provenance::Exact { profiling: false },
        value: Some(OutputValue::Vector(vec![seq as f32, 0.5, 0.25])),
    }
}

/// A tmpfs of `kib` KiB mounted on a fresh folder, unmounted on drop.
struct SmallDisk {
    _dir: tempfile::TempDir,
    mount: PathBuf,
}

impl SmallDisk {
    fn mount(kib: u32) -> Option<Self> {
        let dir = tempfile::tempdir().ok()?;
        let mount = dir.path().join("disk");
        std::fs::create_dir(&mount).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(&mount)
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then_some(SmallDisk { _dir: dir, mount })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).status();
    }
}

/// Every line of `path` parsed as a record (the test fails on a torn or corrupt line).
fn whole_lines(path: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{} ends inside a line",
        path.display()
    );
    text.lines()
        .map(|l| {
            serde_json::from_str::<OutputRecord>(l)
                .unwrap_or_else(|e| panic!("torn line in {}: {l:?}: {e}", path.display()))
                .seq
        })
        .collect()
}

fn counters(metrics: &Metrics, path: &Path) -> (u64, u64) {
    let name = format!("jsonl:{}", path.display());
    (
        metrics.sink_records.with_label_values(&[&name]).get(),
        metrics.sink_dropped.with_label_values(&[&name]).get(),
    )
}

#[test]
fn a_full_disk_drops_and_counts_batches_and_leaves_every_line_whole() {
    let Some(disk) = SmallDisk::mount(64) else {
        return injected_write_errors_are_counted_and_earlier_files_kept();
    };
    let dir = &disk.mount;
    let path = dir.join("out.jsonl");
    // An earlier rotated file, and a filler that takes most of the space.
    let earlier: String = (0..5)
        .map(|s| serde_json::to_string(&record(s)).unwrap() + "\n")
        .collect();
    std::fs::write(dir.join("out.jsonl.1"), &earlier).unwrap();
    let filler = dir.join("filler");
    std::fs::write(&filler, vec![0u8; 40 << 10]).unwrap();

    let metrics = Arc::new(Metrics::new());
    let sinks = SinkSet::new(
        vec![Box::new(JsonlSink::open(&path, 64.0).unwrap())],
        metrics.clone(),
    );
    // Batches of 7 records (about 1 KiB) until well past what fits.
    let mut seq = 100;
    let mut sent = 0;
    for _ in 0..60 {
        sinks.send((seq..seq + 7).map(record).collect());
        seq += 7;
        sent += 7;
        sinks.flush();
    }
    let (written, dropped) = counters(&metrics, &path);
    assert!(dropped > 0, "the disk never filled ({written} written)");
    assert!(written > 0, "nothing fitted before the disk filled");
    assert_eq!(
        written + dropped,
        sent,
        "every record written or counted dropped"
    );
    let on_disk = whole_lines(&path);
    assert_eq!(
        on_disk.len() as u64,
        written,
        "what was counted is what is on disk"
    );
    assert!(on_disk.windows(2).all(|w| w[0] < w[1]), "records in order");
    assert!(
        on_disk.len().is_multiple_of(7),
        "whole batches only: {} records",
        on_disk.len()
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("out.jsonl.1")).unwrap(),
        earlier,
        "the earlier file changed"
    );

    // Space comes back: the sink writes again, after the last whole line.
    std::fs::remove_file(&filler).unwrap();
    sinks.send((seq..seq + 7).map(record).collect());
    sinks.flush();
    let (written_after, _) = counters(&metrics, &path);
    assert_eq!(
        written_after,
        written + 7,
        "writing resumed once space was freed"
    );
    let after = whole_lines(&path);
    assert_eq!(&after[..on_disk.len()], &on_disk[..]);
    assert_eq!(after.last(), Some(&(seq + 6)));
}

/// Without the right to mount: the sink's file is `/dev/full`, where every write fails with
/// ENOSPC.
fn injected_write_errors_are_counted_and_earlier_files_kept() {
    assert!(
        !tools_support::in_ci(),
        "CI must be able to mount a tmpfs for the disk-full test (run the tests as root)"
    );
    eprintln!("NOTE: cannot mount a tmpfs; injecting ENOSPC through /dev/full instead");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    std::os::unix::fs::symlink("/dev/full", &path).unwrap();
    let earlier = serde_json::to_string(&record(1)).unwrap() + "\n";
    std::fs::write(dir.path().join("out.jsonl.1"), &earlier).unwrap();
    let metrics = Arc::new(Metrics::new());
    let sinks = SinkSet::new(
        vec![Box::new(JsonlSink::open(&path, 64.0).unwrap())],
        metrics.clone(),
    );
    for b in 0..10 {
        sinks.send((b * 3..b * 3 + 3).map(record).collect());
    }
    sinks.flush();
    assert_eq!(counters(&metrics, &path), (0, 30));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.jsonl.1")).unwrap(),
        earlier
    );
}
