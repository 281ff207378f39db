//! `mlink record` on the building workload's real footage with the real models: the trace is
//! the current format, every model's view has the length its header names, and each head agrees
//! with its own view (the head's count is the view's count at the model's `min_score`; the
//! grouped scene label is the top of the view's group sums); with `--thumbnails` every record
//! holds its frame's thumbnail, the same as the committed building trace's.

use mlink::link::trace::{TRACE_VERSION, TraceReader};
use mlink::output::OutputValue;
use std::path::Path;
use std::process::Command;

fn entry(names: &[String], values: &[f32], name: &str) -> f32 {
    let i = names
        .iter()
        .position(|n| n == name)
        .unwrap_or_else(|| panic!("no view entry {name} in {names:?}"));
    values[i]
}

#[test]
fn building_records_views_that_agree_with_the_heads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let pipeline = root.join("pipelines/building.yaml");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("b.trace");
    let run = Command::new(env!("CARGO_BIN_EXE_mlink"))
        .args(["record", pipeline.to_str().unwrap(), "--out"])
        .arg(&out)
        .args(["--max-frames", "6", "--thumbnails", "32x32"])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let reader = TraceReader::open(&out).unwrap();
    assert_eq!(reader.version(), TRACE_VERSION);
    let header = reader.header().clone();
    let records: Vec<_> = reader.collect::<Result<_, _>>().unwrap();
    assert_eq!(records.len(), 6);
    let size = header.thumbnail.expect("a thumbnail size in the header");
    assert_eq!((size.width, size.height), (32, 32));
    let (_, committed) =
        mlink::link::trace::read_all(&root.join("traces/building-thumbnails.trace")).unwrap();
    for (r, c) in records.iter().zip(&committed) {
        let t = r.thumbnail.as_deref().expect("a thumbnail in every record");
        assert_eq!(t.len(), 32 * 32 * 3);
        assert!(t.iter().any(|&b| b != t[0]), "a flat thumbnail");
        // Decoding and resampling are deterministic: the committed trace was recorded so.
        assert_eq!(Some(t), c.thumbnail.as_deref(), "frame {}", r.seq);
        assert_eq!(r.outputs, c.outputs, "frame {}", r.seq);
    }
    let ids: Vec<&str> = header.models.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["persons", "objects", "scene", "poses"]);
    let lens: Vec<usize> = header.models.iter().map(|m| m.view.len()).collect();
    // Detectors: 3 classes x 5 thresholds + 9 + 9 + 4; MoveNet 17 keypoints more; the scene's
    // 53 kept classes and the rest.
    assert_eq!(lens, [37, 37, 54, 44]);
    let scene = &header.models[2].view;
    for r in &records {
        assert_eq!(r.views.len(), 4);
        let view = |m: usize| r.views[m].as_deref().unwrap();
        let head = |m: usize| match &r.outputs[m] {
            Some(OutputValue::Vector(v)) => v.clone(),
            other => panic!("{other:?}"),
        };
        for (m, class) in [(0, "person"), (1, "object"), (3, "person")] {
            let names = &header.models[m].view;
            assert_eq!(
                head(m)[0],
                entry(names, view(m), &format!("count.{class}@0.3")),
                "model {}",
                ids[m]
            );
            assert!(view(m).len() == names.len());
        }
        // The scene head's groups are the view's kept classes in order: people (36 classes),
        // lighting (5), equipment (12); the view's rest is `other`.
        let v = view(2);
        let sums = [
            v[..36].iter().sum::<f32>(),
            v[36..41].iter().sum::<f32>(),
            v[41..53].iter().sum::<f32>(),
            entry(scene, v, "p.rest"),
        ];
        let top = (0..4).max_by(|&a, &b| sums[a].total_cmp(&sums[b])).unwrap();
        let label = head(2);
        assert_eq!(label.len(), 4);
        assert_eq!(label[top], 1.0, "groups {sums:?}, head {label:?}");
    }
}
