//! The formats fuzzed, each with seeds from the project's real files or its own writers, a
//! structure-aware mutator and a run through the real loader (and, for an accepted input, the
//! first uses of what was loaded, where a bad value would show).

use super::Format;
use super::mutate::{Rng, mutate_bytes, mutate_json};
use mlink::adapt::aggregate::messages::{
    ErrorBody, ErrorCode, LinkSpec, PROTOCOL_VERSION, ParamVec, StateView, TensorShape,
    UpdateAccepted, UpdateRequest,
};
use mlink::adapt::aggregate::{AggregatorState, EdgeTokens, LinkInit, RoundPolicy};
use mlink::adapt::labels::Labels;
use mlink::adapt::oracle::{LabelEncoding, LabelledFrames, OracleLink};
use mlink::link::sample::Sample;
use mlink::link::trace::{TraceHeader, TraceModel, TraceReader, TraceRecord, TraceWriter};
use mlink::link::{LinkBundle, TrainParams};
use mlink::output::{OutputForm, OutputSpec, OutputValue, TaskKind};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Every format's name, in the order `all` runs them.
pub const FORMATS: &[&str] = &[
    "pipeline", "trace", "bundle", "oracle", "state", "tokens", "labels", "http",
];

/// Builds the named format (its seeds are made here, once).
pub fn build(name: &str) -> Option<Box<dyn Format>> {
    Some(match name {
        "pipeline" => Box::new(Pipeline::new()),
        "trace" => Box::new(Trace::new()),
        "bundle" => Box::new(Bundle::new()),
        "oracle" => Box::new(Oracle::new()),
        "state" => Box::new(State::new()),
        "tokens" => Box::new(Tokens::new()),
        "labels" => Box::new(LabelsFile::new()),
        "http" => Box::new(Http::new()),
        _ => return None,
    })
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn write(scratch: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch.join(name);
    std::fs::write(&path, bytes).expect("the fuzzer's scratch folder is writable");
    path
}

/// Parses `base` as JSON, edits it structurally and writes it back (compact or pretty).
fn json_edit(rng: &mut Rng, base: &[u8]) -> Option<Vec<u8>> {
    let v: Value = serde_json::from_slice(base).ok()?;
    let m = mutate_json(rng, &v);
    if rng.one_in(2) {
        serde_json::to_vec(&m).ok()
    } else {
        serde_json::to_vec_pretty(&m).ok()
    }
}

/// A value of `spec`'s form, or None when the spec is too large to build one for.
fn value_of(spec: &OutputSpec) -> Option<OutputValue> {
    match spec.form {
        OutputForm::Vector { len } if len <= 1 << 16 => Some(OutputValue::Vector(vec![0.25; len])),
        OutputForm::Sequence { vocab, max_len, .. } if max_len <= 1 << 12 => {
            let n = max_len.min(3);
            Some(OutputValue::Tokens(
                (0..n).map(|i| (i % vocab.max(1)) as u32).collect(),
            ))
        }
        _ => None,
    }
}

// ----- pipeline YAML --------------------------------------------------------------------------

/// Pipeline files: parsed and validated as `mlink validate` does (models resolved against the
/// real `pipelines/` folder).
struct Pipeline {
    seeds: Vec<Vec<u8>>,
    base: PathBuf,
}

impl Pipeline {
    fn new() -> Self {
        let dir = root().join("pipelines");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("pipelines/ exists")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        let seeds = files
            .iter()
            .map(|p| std::fs::read(p).expect("a pipeline file is readable"))
            .collect();
        Pipeline { seeds, base: dir }
    }
}

impl Format for Pipeline {
    fn name(&self) -> &'static str {
        "pipeline"
    }
    fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }
    fn structured(&self, rng: &mut Rng, base: &[u8]) -> Option<Vec<u8>> {
        // YAML -> JSON value -> edit -> YAML (keys that are not strings fall back to bytes).
        let text = std::str::from_utf8(base).ok()?;
        let y: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).ok()?;
        let j: Value = serde_json::to_value(&y).ok()?;
        let m = mutate_json(rng, &j);
        serde_yaml_ng::to_string(&m).ok().map(String::into_bytes)
    }
    fn run(&self, input: &[u8], _scratch: &Path) -> Result<(), String> {
        let text = std::str::from_utf8(input).map_err(|e| e.to_string())?;
        let p = mlink::config::parse_str(text, "fuzz.yaml").map_err(|e| format!("{e:?}"))?;
        let issues = mlink::config::check(&p, &self.base);
        if issues.is_empty() {
            Ok(())
        } else {
            Err(format!("{issues:?}"))
        }
    }
}

// ----- traces ---------------------------------------------------------------------------------

fn trace_header() -> TraceHeader {
    let model = |id: &str, spec: OutputSpec| TraceModel {
        id: id.into(),
        spec,
        memory_mb: Some(12.5),
        latency_ms: Some(3.0),
        crops_from: None,
        view: if id == "detector" {
            vec!["count@0.3".into(), "cell0".into()]
        } else {
            vec![]
        },
    };
    TraceHeader {
        models: vec![
            model("detector", OutputSpec::vector(4, TaskKind::Count)),
            model("classifier", OutputSpec::vector(3, TaskKind::SingleLabel)),
            model("captioner", OutputSpec::sequence(8, 5, 7)),
        ],
        frame_feature_names: vec!["pixel".into(), "area".into()],
        source: "fuzz seed".into(),
        thumbnail: None,
    }
}

fn trace_record(seq: u64) -> TraceRecord {
    let s = seq as f32;
    TraceRecord {
        camera: format!("cam{}", seq % 2),
        seq,
        time_s: seq as f64 * 0.2,
        outputs: vec![
            Some(OutputValue::Vector(vec![s, 1.0, 0.0, 2.0])),
            (!seq.is_multiple_of(3)).then(|| OutputValue::Vector(vec![0.2, 0.3, 0.5])),
            Some(OutputValue::Tokens(vec![1, (seq % 7) as u32, 7])),
        ],
        frame_features: vec![0.1, s / 100.0],
        thumbnail: None,
        views: vec![Some(vec![s, 0.5]), None, None],
    }
}

/// A trace's parts, for edits that keep lengths and checksums right.
struct TraceParts {
    version: u32,
    header: Vec<u8>,
    records: Vec<Vec<u8>>,
    count: Option<u64>,
}

impl TraceParts {
    fn parse(b: &[u8]) -> Option<Self> {
        let u32_at = |i: usize| -> Option<u32> {
            Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?))
        };
        if b.get(..8)? != mlink::link::trace::TRACE_MAGIC {
            return None;
        }
        let version = u32_at(8)?;
        let hl = u32_at(12)? as usize;
        let header = b.get(16..16 + hl)?.to_vec();
        let mut i = 16 + hl + 4;
        let mut records = Vec::new();
        let mut count = None;
        while i + 4 <= b.len() {
            let len = u32_at(i)?;
            if len == u32::MAX {
                count = Some(u64::from_le_bytes(b.get(i + 4..i + 12)?.try_into().ok()?));
                break;
            }
            let len = len as usize;
            records.push(b.get(i + 4..i + 4 + len)?.to_vec());
            i += 8 + len;
        }
        Some(TraceParts {
            version,
            header,
            records,
            count,
        })
    }

    fn encode(&self) -> Vec<u8> {
        use mlink::link::trace::crc32;
        let mut out = mlink::link::trace::TRACE_MAGIC.to_vec();
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.header.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.header);
        out.extend_from_slice(&crc32(&self.header).to_le_bytes());
        for r in &self.records {
            out.extend_from_slice(&(r.len() as u32).to_le_bytes());
            out.extend_from_slice(r);
            out.extend_from_slice(&crc32(r).to_le_bytes());
        }
        if let Some(n) = self.count {
            let c = n.to_le_bytes();
            out.extend_from_slice(&u32::MAX.to_le_bytes());
            out.extend_from_slice(&c);
            out.extend_from_slice(&crc32(&c).to_le_bytes());
        }
        out
    }
}

/// Traces: read whole, read as an interrupted recording, and resumed, appended to and finished
/// (a resumed trace must then read back complete).
struct Trace {
    seeds: Vec<Vec<u8>>,
}

impl Trace {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let path = dir.path().join("seed.trace");
        let mut w = TraceWriter::create(&path, &trace_header()).expect("a trace can be created");
        for seq in 0..12 {
            w.append(&trace_record(seq)).expect("a seed record fits");
        }
        w.finish().expect("the seed trace finishes");
        let complete = std::fs::read(&path).expect("the seed trace reads");
        let partial_path = dir.path().join("cut.trace");
        let mut w = TraceWriter::create(&partial_path, &trace_header()).expect("trace");
        for seq in 0..5 {
            w.append(&trace_record(seq)).expect("a seed record fits");
        }
        w.flush().expect("flush");
        drop(w);
        let partial = std::fs::read(mlink::link::trace::partial_path(&partial_path))
            .expect("the unfinished trace reads");
        Trace {
            seeds: vec![complete, partial],
        }
    }
}

impl Format for Trace {
    fn name(&self) -> &'static str {
        "trace"
    }
    fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }
    fn structured(&self, rng: &mut Rng, base: &[u8]) -> Option<Vec<u8>> {
        let mut t = TraceParts::parse(base)?;
        match rng.below(6) {
            0 => t.header = json_edit(rng, &t.header)?,
            1 if !t.records.is_empty() => {
                let i = rng.below(t.records.len());
                t.records[i] = mutate_bytes(rng, &t.records[i], &[]);
            }
            2 if !t.records.is_empty() => {
                let i = rng.below(t.records.len());
                let r = t.records[i].clone();
                t.records.insert(rng.below(t.records.len() + 1), r);
            }
            3 => t.count = Some(rng.next_u64() % 64),
            4 => t.count = None,
            _ => t.version = *rng.pick(&[0, 1, 2, u32::MAX]),
        }
        Some(t.encode())
    }
    fn run(&self, input: &[u8], scratch: &Path) -> Result<(), String> {
        let path = write(scratch, "t.trace", input);
        let whole = mlink::link::trace::read_all(&path).map_err(|e| e.to_string());
        // As an interrupted recording: every complete record, then a quiet stop or an error.
        let mut reader = TraceReader::open_partial(&path).map_err(|e| e.to_string())?;
        let mut partial_ok = true;
        for r in reader.by_ref() {
            if r.is_err() {
                partial_ok = false;
            }
        }
        // Resumed: what was readable is kept, one record is appended, and the result is whole.
        let target = scratch.join("r.trace");
        std::fs::write(mlink::link::trace::partial_path(&target), input)
            .map_err(|e| e.to_string())?;
        if let Ok(mut w) = TraceWriter::resume(&target) {
            let header = w.header().clone();
            let kept = w.records();
            let rec = TraceRecord {
                camera: "resumed".into(),
                seq: kept,
                time_s: 1.0,
                outputs: header.models.iter().map(|m| value_of(&m.spec)).collect(),
                frame_features: vec![0.0; header.frame_feature_names.len().min(1 << 16)],
                thumbnail: None,
                views: header
                    .models
                    .iter()
                    .map(|m| (!m.view.is_empty()).then(|| vec![0.0; m.view.len().min(1 << 16)]))
                    .collect(),
            };
            let appended = w.append(&rec).is_ok();
            w.finish().map_err(|e| e.to_string())?;
            let (_, back) = mlink::link::trace::read_all(&target)
                .unwrap_or_else(|e| panic!("a resumed and finished trace must read back: {e}"));
            assert_eq!(
                back.len() as u64,
                kept + u64::from(appended),
                "a resumed trace keeps its complete records and the appended one"
            );
        }
        // Accepted: a complete trace, or an interrupted one whose records all read.
        match whole {
            Ok(_) => {
                assert!(
                    partial_ok,
                    "a trace that reads whole must read as partial too"
                );
                Ok(())
            }
            Err(_) if partial_ok => Ok(()),
            Err(e) => Err(e),
        }
    }
}

// ----- link bundles ---------------------------------------------------------------------------

fn bundle_models() -> Vec<(String, OutputSpec)> {
    vec![
        (
            "classes".into(),
            OutputSpec::vector(4, TaskKind::SingleLabel),
        ),
        ("counts".into(), OutputSpec::vector(2, TaskKind::Count)),
        ("caption".into(), OutputSpec::sequence(6, 4, 5)),
    ]
}

fn bundle_samples(n: usize) -> Vec<Vec<Option<OutputValue>>> {
    (0..n)
        .map(|i| {
            let c = i % 4;
            let mut p = vec![0.05f32; 4];
            p[c] = 0.85;
            vec![
                Some(OutputValue::Vector(p)),
                (!i.is_multiple_of(5)).then(|| OutputValue::Vector(vec![c as f32, (i % 3) as f32])),
                Some(OutputValue::Tokens(vec![(c + 1) as u32, 5])),
            ]
        })
        .collect()
}

/// A safetensors file's parts: its JSON header and the data after it.
fn safetensors_parts(b: &[u8]) -> Option<(Value, Vec<u8>)> {
    let n = u64::from_le_bytes(b.get(..8)?.try_into().ok()?) as usize;
    let header: Value = serde_json::from_slice(b.get(8..8usize.checked_add(n)?)?).ok()?;
    Some((header, b[8 + n..].to_vec()))
}

fn safetensors_join(header: &Value, data: &[u8]) -> Vec<u8> {
    let h = serde_json::to_vec(header).unwrap_or_default();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out
}

/// Link bundles: loaded, checked against their own models, and used: every link and ensemble
/// score and one prediction per target from every other model.
struct Bundle {
    seeds: Vec<Vec<u8>>,
}

impl Bundle {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let params = TrainParams {
            epochs: 2,
            batch_size: 16,
            ..TrainParams::default()
        };
        let mut seeds = Vec::new();
        let models = bundle_models();
        for (k, samples) in [(3usize, 40usize), (2, 24)] {
            let models = &models[..k];
            let samples: Vec<_> = bundle_samples(samples)
                .into_iter()
                .map(|mut s| {
                    s.truncate(k);
                    Sample::new(s)
                })
                .collect();
            let b = LinkBundle::train(models, &samples, &params, 0.25, 1, &|_| {})
                .expect("the seed bundle trains");
            let path = dir.path().join(format!("seed{k}.links"));
            b.save(&path).expect("the seed bundle saves");
            seeds.push(std::fs::read(&path).expect("the seed bundle reads"));
        }
        Bundle { seeds }
    }
}

impl Format for Bundle {
    fn name(&self) -> &'static str {
        "bundle"
    }
    fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }
    fn structured(&self, rng: &mut Rng, base: &[u8]) -> Option<Vec<u8>> {
        let (mut header, data) = safetensors_parts(base)?;
        if rng.one_in(3) {
            // The safetensors header itself: tensor names, shapes, offsets.
            header = mutate_json(rng, &header);
            return Some(safetensors_join(&header, &data));
        }
        // The mlink manifest inside the metadata (the checksum covers only the tensors).
        let manifest = header
            .get("__metadata__")?
            .get("mlink.manifest")?
            .as_str()?
            .to_string();
        let m: Value = serde_json::from_str(&manifest).ok()?;
        let edited = serde_json::to_string(&mutate_json(rng, &m)).ok()?;
        header["__metadata__"]["mlink.manifest"] = Value::String(edited);
        Some(safetensors_join(&header, &data))
    }
    fn run(&self, input: &[u8], scratch: &Path) -> Result<(), String> {
        let path = write(scratch, "b.links", input);
        let b = LinkBundle::load(&path).map_err(|e| e.to_string())?;
        let models: Vec<(String, OutputSpec)> = b
            .models
            .iter()
            .map(|m| (m.id.clone(), m.spec.clone()))
            .collect();
        b.check_models(&models).map_err(|e| e.to_string())?;
        let k = b.model_count();
        if k > 16 {
            return Ok(());
        }
        let values: Vec<Option<OutputValue>> = models.iter().map(|(_, s)| value_of(s)).collect();
        for j in 0..k {
            let active: Vec<(usize, &OutputValue)> = (0..k)
                .filter(|&i| i != j)
                .filter_map(|i| values[i].as_ref().map(|v| (i, v)))
                .collect();
            let ids: Vec<usize> = active.iter().map(|(i, _)| *i).collect();
            let _ = b.ensemble_score(&ids, j);
            for &i in &ids {
                let _ = b.link_score(i, j);
            }
            let _ = b.predict(j, &active);
        }
        Ok(())
    }
}

// ----- oracle links ---------------------------------------------------------------------------

/// Oracle link files: loaded and applied to a value of the source model's form.
struct Oracle {
    seeds: Vec<Vec<u8>>,
}

impl Oracle {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let params = TrainParams {
            epochs: 3,
            batch_size: 8,
            ..TrainParams::default()
        };
        let count = OutputSpec::vector(1, TaskKind::Count);
        let counts = LabelledFrames {
            model: "counter".into(),
            model_spec: count.clone(),
            spec: count,
            encoding: LabelEncoding::Direct,
            pairs: (0..30)
                .map(|i| {
                    let n = (i % 5) as f32;
                    (
                        OutputValue::Vector(vec![n + 1.0]),
                        OutputValue::Vector(vec![n]),
                    )
                })
                .collect(),
        };
        let classes = LabelledFrames {
            model: "classifier".into(),
            model_spec: OutputSpec::vector(3, TaskKind::SingleLabel),
            spec: OutputSpec::vector(3, TaskKind::SingleLabel),
            encoding: LabelEncoding::ClassIndex { classes: 3 },
            pairs: (0..30)
                .map(|i| {
                    let mut p = vec![0.1f32; 3];
                    p[i % 3] = 0.8;
                    let mut t = vec![0.0f32; 3];
                    t[(i + 1) % 3] = 1.0;
                    (OutputValue::Vector(p), OutputValue::Vector(t))
                })
                .collect(),
        };
        let mut seeds = Vec::new();
        for (n, frames) in [counts, classes].iter().enumerate() {
            let link = OracleLink::train(frames, &params, 0.2).expect("the seed oracle trains");
            let path = dir.path().join(format!("seed{n}.oracle"));
            link.save(&path).expect("the seed oracle saves");
            seeds.push(std::fs::read(&path).expect("the seed oracle reads"));
        }
        Oracle { seeds }
    }
}

impl Format for Oracle {
    fn name(&self) -> &'static str {
        "oracle"
    }
    fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }
    fn structured(&self, rng: &mut Rng, base: &[u8]) -> Option<Vec<u8>> {
        json_edit(rng, base)
    }
    fn run(&self, input: &[u8], scratch: &Path) -> Result<(), String> {
        let path = write(scratch, "o.oracle", input);
        let link = OracleLink::load(&path).map_err(|e| e.to_string())?;
        if let Some(v) = value_of(&link.source_spec) {
            link.apply(&v).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

// ----- aggregator state and link initialization files ------------------------------------------

fn link_spec() -> LinkSpec {
    LinkSpec::new(
        "classes->counts",
        "vec2vec hidden=3 act=relu",
        vec![
            TensorShape::new("w1", &[2, 3]),
            TensorShape::new("b1", &[3]),
        ],
    )
}

fn link_init() -> LinkInit {
    LinkInit::new(link_spec(), (0..9).map(|i| i as f32 * 0.1).collect()).expect("a valid link")
}

fn policy() -> RoundPolicy {
    RoundPolicy {
        deadline: Duration::from_secs(60),
        quorum: 1,
        server_lr: 1.0,
    }
}

const EDGES: [&str; 2] = ["edge-a", "edge-b"];

fn edges() -> Vec<String> {
    EDGES.iter().map(|e| e.to_string()).collect()
}

/// The aggregator's state file (resumed at start) and link initialization files.
struct State {
    seeds: Vec<Vec<u8>>,
}

impl State {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let state = dir.path().join("state.json");
        let mut s =
            AggregatorState::open(&state, vec![link_init()], edges(), policy(), Instant::now())
                .expect("a state opens");
        // One closed round, so the seed carries a round summary.
        for edge in EDGES {
            let req = UpdateRequest {
                version: PROTOCOL_VERSION,
                edge_id: edge.into(),
                fingerprint: Some(link_spec().fingerprint()),
                round: 0,
                n_samples: Some(10),
                delta: ParamVec(vec![0.01; 9]),
            };
            s.submit(edge, "classes->counts", req, 100, Instant::now())
                .expect("the seed update is accepted");
        }
        drop(s);
        let init = dir.path().join("init.link");
        link_init().save(&init).expect("a link file saves");
        State {
            seeds: vec![
                std::fs::read(&state).expect("state reads"),
                std::fs::read(&init).expect("link file reads"),
            ],
        }
    }
}

impl Format for State {
    fn name(&self) -> &'static str {
        "state"
    }
    fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }
    fn structured(&self, rng: &mut Rng, base: &[u8]) -> Option<Vec<u8>> {
        json_edit(rng, base)
    }
    fn run(&self, input: &[u8], scratch: &Path) -> Result<(), String> {
        let path = write(scratch, "state.json", input);
        let state = AggregatorState::open(&path, vec![], edges(), policy(), Instant::now());
        let state_ok = match state {
            Ok(s) => {
                let view = s.view();
                for id in s.link_ids() {
                    let g = s.global(&id).map_err(|e| e.to_string())?;
                    assert_eq!(
                        g.params.0.len(),
                        g.spec.num_params(),
                        "a resumed link's weights fit its spec"
                    );
                }
                let _ = serde_json::to_vec(&view);
                true
            }
            Err(_) => false,
        };
        let path = write(scratch, "init.link", input);
        let init_ok = LinkInit::load(&path).is_ok();
        if state_ok || init_ok {
            Ok(())
        } else {
            Err("refused as state and as link file".into())
        }
    }
}

// ----- tokens files ---------------------------------------------------------------------------

struct Tokens {
    seeds: Vec<Vec<u8>>,
}

impl Tokens {
    fn new() -> Self {
        Tokens {
            seeds: vec![
                b"# edge tokens\nedge-a 0123456789abcdef0123456789abcdef\n\nedge-b   fedcba9876543210fedcba9876543210\n".to_vec(),
                b"site:lobby.1 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\nsite_garage-2 bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\r\n".to_vec(),
            ],
        }
    }
}

impl Format for Tokens {
    fn name(&self) -> &'static str {
        "tokens"
    }
    fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }
    fn structured(&self, rng: &mut Rng, base: &[u8]) -> Option<Vec<u8>> {
        // Line-level edits: duplicate, swap or blank a line.
        let text = std::str::from_utf8(base).ok()?;
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.is_empty() {
            return None;
        }
        let i = rng.below(lines.len());
        match rng.below(4) {
            0 => {
                let l = lines[i].clone();
                lines.push(l);
            }
            1 => lines[i] = lines[i].replace(' ', "\t"),
            2 => lines[i] = format!("{} extra", lines[i]),
            _ => lines[i] = lines[i].split_whitespace().next().unwrap_or("").to_string(),
        }
        Some(lines.join("\n").into_bytes())
    }
    fn run(&self, input: &[u8], scratch: &Path) -> Result<(), String> {
        let path = write(scratch, "tokens", input);
        let t = EdgeTokens::load(&path).map_err(|e| e.to_string())?;
        let _ = t.authenticate("0123456789abcdef0123456789abcdef");
        let _ = t.authenticate("");
        Ok(())
    }
}

// ----- label files ----------------------------------------------------------------------------

struct LabelsFile {
    seeds: Vec<Vec<u8>>,
}

impl LabelsFile {
    fn new() -> Self {
        LabelsFile {
            seeds: vec![
                b"# labels\ncamera,seq,label\ncam0,0,1\ncam0,1,2.5\ncam1,0,0\n".to_vec(),
                b"camera,seq,label\ncam0,3,0.1;0.9\ncam0,4,0.5;0.5\n".to_vec(),
                b"{\"camera\": \"cam0\", \"seq\": 17, \"label\": 3}\n{\"camera\": \"cam1\", \"seq\": 2, \"label\": 1.5}\n".to_vec(),
                b"{\"camera\": \"cam0\", \"seq\": 1, \"label\": [0.1, 0.9]}\n\n{\"camera\": \"cam0\", \"seq\": 2, \"label\": [1, 0]}\n".to_vec(),
            ],
        }
    }
}

impl Format for LabelsFile {
    fn name(&self) -> &'static str {
        "labels"
    }
    fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }
    fn structured(&self, rng: &mut Rng, base: &[u8]) -> Option<Vec<u8>> {
        let text = std::str::from_utf8(base).ok()?;
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        let i = rng.below(lines.len().max(1));
        let line = lines.get(i)?.clone();
        let edited = match serde_json::from_str::<Value>(&line) {
            Ok(v) => serde_json::to_string(&mutate_json(rng, &v)).ok()?,
            Err(_) => {
                // A CSV row: edit one field.
                let mut fields: Vec<String> = line.split(',').map(str::to_string).collect();
                let f = rng.below(fields.len());
                fields[f] = match rng.below(4) {
                    0 => super::mutate::interesting_number(rng),
                    1 => String::new(),
                    2 => format!("{};{}", fields[f], super::mutate::interesting_number(rng)),
                    _ => fields[f].repeat(2 + rng.below(100)),
                };
                fields.join(",")
            }
        };
        lines[i] = edited;
        if rng.one_in(4) {
            lines.push(lines[i].clone());
        }
        Some(lines.join("\n").into_bytes())
    }
    fn run(&self, input: &[u8], scratch: &Path) -> Result<(), String> {
        let mut accepted = false;
        let mut last = String::new();
        for name in ["l.csv", "l.jsonl", "l.txt"] {
            let path = write(scratch, name, input);
            match Labels::load(&path) {
                Ok(l) => {
                    let len = l.label_len();
                    assert!(
                        l.rows.iter().all(|r| r.label.len() == len),
                        "every label has the same length"
                    );
                    accepted = true;
                }
                Err(e) => last = e.to_string(),
            }
        }
        if accepted { Ok(()) } else { Err(last) }
    }
}

// ----- aggregator HTTP bodies -----------------------------------------------------------------

/// Request bodies as the server's update handler reads them (parsed, then checked and counted
/// by a fresh aggregation state) and response bodies as the edge client reads them.
struct Http {
    seeds: Vec<Vec<u8>>,
}

impl Http {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let s = AggregatorState::open(
            &dir.path().join("state.json"),
            vec![link_init()],
            edges(),
            policy(),
            Instant::now(),
        )
        .expect("a state opens");
        let update = UpdateRequest {
            version: PROTOCOL_VERSION,
            edge_id: "edge-a".into(),
            fingerprint: Some(link_spec().fingerprint()),
            round: 0,
            n_samples: Some(12),
            delta: ParamVec(vec![0.5; 9]),
        };
        let accepted = UpdateAccepted {
            version: PROTOCOL_VERSION,
            link_id: "classes->counts".into(),
            round: 0,
            accepted_in_round: 1,
            round_closed: false,
            open_round: 0,
        };
        let error = ErrorBody {
            version: PROTOCOL_VERSION,
            error: ErrorCode::StaleRound,
            message: "round 0 is closed".into(),
        };
        let global = s.global("classes->counts").expect("the link exists");
        let view: StateView = s.view();
        let seeds = vec![
            serde_json::to_vec(&update).expect("json"),
            serde_json::to_vec(&global).expect("json"),
            serde_json::to_vec(&accepted).expect("json"),
            serde_json::to_vec(&error).expect("json"),
            serde_json::to_vec(&view).expect("json"),
        ];
        Http { seeds }
    }
}

impl Format for Http {
    fn name(&self) -> &'static str {
        "http"
    }
    fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }
    fn structured(&self, rng: &mut Rng, base: &[u8]) -> Option<Vec<u8>> {
        json_edit(rng, base)
    }
    fn run(&self, input: &[u8], scratch: &Path) -> Result<(), String> {
        use mlink::adapt::aggregate::client::check_global;
        use mlink::adapt::aggregate::server::parse_update;
        let mut accepted = false;
        if let Ok(req) = parse_update(input) {
            let path = scratch.join("http-state.json");
            let _ = std::fs::remove_file(&path);
            let mut s =
                AggregatorState::open(&path, vec![link_init()], edges(), policy(), Instant::now())
                    .expect("a fresh state opens");
            let before = s.global("classes->counts").expect("the link exists");
            match s.submit(
                "edge-a",
                "classes->counts",
                req,
                input.len() as u64,
                Instant::now(),
            ) {
                Ok(_) => accepted = true,
                Err(_) => {
                    // A refusal leaves the state as it was.
                    let after = s.global("classes->counts").expect("the link exists");
                    assert_eq!(before, after, "a refused update changed the state");
                }
            }
        }
        accepted |= check_global("classes->counts", input).is_ok();
        accepted |= serde_json::from_slice::<UpdateAccepted>(input).is_ok();
        accepted |= serde_json::from_slice::<ErrorBody>(input).is_ok();
        accepted |= serde_json::from_slice::<StateView>(input).is_ok();
        if accepted {
            Ok(())
        } else {
            Err("refused by every parser".into())
        }
    }
}
