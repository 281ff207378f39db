//! Semantic checks of a parsed pipeline: everything its types cannot say. Every problem is
//! reported, not just the first.

use super::load::closest;
use super::types::*;
use super::{ConfigError, Issue};
use crate::output::{OutputForm, OutputSpec};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Resolves a path written in a pipeline file: absolute paths stay, relative ones are taken
/// from `base_dir`, the pipeline file's folder.
pub fn resolve_path(base_dir: &Path, p: impl AsRef<Path>) -> PathBuf {
    let p = p.as_ref();
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}

/// Validates a parsed pipeline read from `file` (whose folder is `base_dir`), returning every
/// error, located in `file`'s source. Empty when the pipeline is valid.
pub fn validate(p: &Pipeline, file: &Path, base_dir: &Path) -> Vec<ConfigError> {
    let label = file.display().to_string();
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut errors: Vec<ConfigError> = check(p, base_dir)
        .into_iter()
        .map(|i| i.locate(&label, &text))
        .collect();
    errors.sort_by_key(|e| (e.line, e.column));
    errors
}

/// The semantic checks without locations: every problem as a field path and a message.
pub fn check(p: &Pipeline, base_dir: &Path) -> Vec<Issue> {
    let mut out = Vec::new();
    if p.version != PIPELINE_VERSION {
        out.push(Issue::new(
            "version",
            format!(
                "unsupported version {}: this mlink reads version {PIPELINE_VERSION}",
                p.version
            ),
        ));
    }
    check_cameras(p, base_dir, &mut out);
    check_models(p, base_dir, &mut out);
    check_links(&p.links, base_dir, &mut out);
    check_scheduler(p, &mut out);
    check_adaptation(&p.adaptation, &mut out);
    check_sinks(&p.sinks, &mut out);
    if let Some(listen) = &p.metrics.listen
        && listen.parse::<std::net::SocketAddr>().is_err()
    {
        out.push(Issue::new(
            "metrics.listen",
            format!("`{listen}` is not a socket address: write IP:PORT, e.g. `127.0.0.1:9464`"),
        ));
    }
    if let Some(name) = &p.metrics.api_token_env
        && (name.is_empty()
            || name.starts_with(|c: char| c.is_ascii_digit())
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    {
        out.push(Issue::new(
            "metrics.api_token_env",
            format!(
                "`{name}` is not an environment variable name: use letters, digits and `_`, \
                 not starting with a digit (e.g. `MLINK_API_TOKEN`)"
            ),
        ));
    }
    out
}

/// Checks a link bundle's models against the pipeline's: the same model ids, and the same
/// output shape wherever the pipeline file alone fixes it (count heads). The bundle's reader
/// calls this once it has read the bundle's model list.
pub fn validate_with_bundle(p: &Pipeline, bundle_models: &[(String, OutputSpec)]) -> Vec<Issue> {
    let mut out = Vec::new();
    let bundle: HashMap<&str, &OutputSpec> = bundle_models
        .iter()
        .map(|(id, spec)| (id.as_str(), spec))
        .collect();
    let ours: HashSet<&str> = p.models.iter().map(|m| m.id.as_str()).collect();
    for (i, m) in p.models.iter().enumerate() {
        let Some(spec) = bundle.get(m.id.as_str()) else {
            out.push(Issue::new(
                "links.bundle",
                format!(
                    "the bundle has no links for model `{}` (models[{i}]): retrain it with \
                     `mlink train` on this pipeline",
                    m.id
                ),
            ));
            continue;
        };
        if let Some(len) = count_len(&m.head)
            && spec.form != (OutputForm::Vector { len })
        {
            out.push(Issue::new(
                format!("models[{i}].head"),
                format!(
                    "the bundle's links for `{}` were trained for output {:?}, this head gives a \
                     vector of length {len}",
                    m.id, spec.form
                ),
            ));
        }
    }
    let mut extra: Vec<&str> = bundle
        .keys()
        .filter(|id| !ours.contains(*id))
        .copied()
        .collect();
    extra.sort_unstable();
    if !extra.is_empty() {
        out.push(Issue::new(
            "links.bundle",
            format!(
                "the bundle has links for models this pipeline lacks: {}",
                extra.join(", ")
            ),
        ));
    }
    out
}

/// Output length of a head that the pipeline file alone determines.
fn count_len(h: &HeadConfig) -> Option<usize> {
    match h {
        HeadConfig::Count { .. } => Some(1),
        HeadConfig::ClassCounts { classes } => Some(classes.len()),
        HeadConfig::Occupancy { rows, cols, .. } => Some(rows * cols),
        _ => None,
    }
}

fn check_id(
    path: String,
    id: &str,
    what: &str,
    seen: &mut HashMap<String, usize>,
    idx: usize,
    out: &mut Vec<Issue>,
) {
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        out.push(Issue::new(
            path.clone(),
            format!("{what} id `{id}` must be non-empty and use only letters, digits, `-` and `_`"),
        ));
    }
    if let Some(first) = seen.get(id) {
        out.push(Issue::new(
            path,
            format!("duplicate {what} id `{id}` (first used by {what}s[{first}])"),
        ));
    } else {
        seen.insert(id.to_string(), idx);
    }
}

/// `videotestsrc` pattern names accepted after `test:`.
const TEST_PATTERNS: &[&str] = &[
    "smpte",
    "snow",
    "black",
    "white",
    "red",
    "green",
    "blue",
    "checkers-1",
    "checkers-2",
    "checkers-4",
    "checkers-8",
    "circular",
    "blink",
    "smpte75",
    "zone-plate",
    "gamut",
    "chroma-zone-plate",
    "solid-color",
    "ball",
    "smpte100",
    "bar",
    "pinwheel",
    "spokes",
    "gradient",
    "colors",
    "smpte-rp-219",
];

fn check_cameras(p: &Pipeline, base_dir: &Path, out: &mut Vec<Issue>) {
    if p.cameras.is_empty() {
        out.push(Issue::new("cameras", "at least one camera is required"));
    }
    let mut seen = HashMap::new();
    for (i, c) in p.cameras.iter().enumerate() {
        let at = |f: &str| format!("cameras[{i}].{f}");
        check_id(at("id"), &c.id, "camera", &mut seen, i, out);
        if let Some(msg) = check_uri(&c.uri, base_dir) {
            out.push(Issue::new(at("uri"), msg));
        }
        if let Some(s) = &c.sampling {
            match (s.fps, s.every_seconds) {
                (Some(_), Some(_)) => out.push(Issue::new(
                    at("sampling"),
                    "give exactly one of `fps` and `every_seconds`, not both",
                )),
                (None, None) => out.push(Issue::new(
                    at("sampling"),
                    "give one of `fps` and `every_seconds` (or leave `sampling` out to keep \
                     every frame)",
                )),
                (Some(v), None) => positive(out, at("sampling.fps"), v),
                (None, Some(v)) => positive(out, at("sampling.every_seconds"), v),
            }
        }
        match (c.width, c.height) {
            (Some(_), None) => out.push(Issue::new(at("width"), "give `height` too, or neither")),
            (None, Some(_)) => out.push(Issue::new(at("height"), "give `width` too, or neither")),
            (Some(w), Some(h)) => {
                for (name, v) in [("width", w), ("height", h)] {
                    if v == 0 {
                        out.push(Issue::new(at(name), "must be at least 1 pixel"));
                    }
                }
            }
            (None, None) => {}
        }
        if c.queue < 1 {
            out.push(Issue::new(at("queue"), "must be at least 1"));
        }
    }
}

/// Why a camera URI is unusable, if it is.
fn check_uri(uri: &str, base_dir: &Path) -> Option<String> {
    if let Some((scheme, rest)) = uri.split_once("://") {
        return match scheme {
            "rtsp" | "rtsps" if rest.is_empty() => Some(format!("`{uri}` has no host")),
            "rtsp" | "rtsps" => None,
            "file" => {
                let path = Path::new(rest);
                if !path.is_absolute() {
                    Some(format!(
                        "`{uri}`: a file:// URI needs an absolute path (file:///abs/path); write a plain relative path instead"
                    ))
                } else if !path.is_file() {
                    Some(format!("video file not found: {}", path.display()))
                } else {
                    None
                }
            }
            other => Some(format!(
                "unsupported URI scheme `{other}://`: use rtsp://, file://, test:PATTERN or a file path"
            )),
        };
    }
    if let Some(pattern) = uri.strip_prefix("test:") {
        if TEST_PATTERNS.contains(&pattern) {
            return None;
        }
        let names: Vec<String> = TEST_PATTERNS.iter().map(|s| s.to_string()).collect();
        let hint = closest(pattern, &names)
            .map(|b| format!("did you mean `test:{b}`? "))
            .unwrap_or_default();
        return Some(format!(
            "unknown test pattern `{pattern}`: {hint}(allowed: {})",
            TEST_PATTERNS.join(", ")
        ));
    }
    let path = resolve_path(base_dir, uri);
    if path.is_file() {
        None
    } else {
        Some(format!(
            "`{uri}` is neither an rtsp://, file:// or test: URI nor an existing file (looked for {})",
            path.display()
        ))
    }
}

fn check_models(p: &Pipeline, base_dir: &Path, out: &mut Vec<Issue>) {
    if p.models.is_empty() {
        out.push(Issue::new("models", "at least one model is required"));
    }
    let mut seen = HashMap::new();
    for (i, m) in p.models.iter().enumerate() {
        let at = |f: &str| format!("models[{i}].{f}");
        check_id(at("id"), &m.id, "model", &mut seen, i, out);
        let path = resolve_path(base_dir, &m.path);
        if !path.is_file() {
            out.push(Issue::new(
                at("path"),
                format!(
                    "model file not found: {} (scripts/setup.sh produces the models in models/)",
                    path.display()
                ),
            ));
        }
        if let Some(oracle) = &m.oracle {
            let path = resolve_path(base_dir, oracle);
            if !path.is_file() {
                out.push(Issue::new(
                    at("oracle"),
                    format!(
                        "oracle link not found: {} (`mlink adapt` writes one)",
                        path.display()
                    ),
                ));
            }
        }
        check_head(m, i, out);
        if let Some(view) = &m.view {
            for (field, message) in view.check(m.adapter) {
                out.push(Issue::new(at(&format!("view.{field}")), message));
            }
        }
        if let Some(source) = &m.crops_from {
            match p.models.iter().find(|o| &o.id == source) {
                _ if source == &m.id => out.push(Issue::new(
                    at("crops_from"),
                    "a model cannot run on crops of its own boxes",
                )),
                None => {
                    let ids: Vec<String> = p.models.iter().map(|o| o.id.clone()).collect();
                    let hint = closest(source, &ids)
                        .map(|b| format!(": did you mean `{b}`?"))
                        .unwrap_or_default();
                    out.push(Issue::new(
                        at("crops_from"),
                        format!("no model has id `{source}`{hint}"),
                    ));
                }
                Some(o) if !o.adapter.is_detector() => out.push(Issue::new(
                    at("crops_from"),
                    format!(
                        "model `{source}` ({}) is not a detector: crops come from centernet, \
                         nanodet or blazeface models",
                        o.adapter.name()
                    ),
                )),
                Some(_) => {}
            }
        }
        if let CostConfig::Declared(c) = &m.cost {
            positive(out, at("cost.memory_mb"), c.memory_mb);
            positive(out, at("cost.latency_ms"), c.latency_ms);
        }
        if !(0.0..=1.0).contains(&m.min_score) {
            out.push(Issue::new(
                at("min_score"),
                format!("must be between 0 and 1, found {}", m.min_score),
            ));
        }
        if m.threads < 1 {
            out.push(Issue::new(at("threads"), "must be at least 1"));
        }
    }
}

fn check_head(m: &ModelConfig, i: usize, out: &mut Vec<Issue>) {
    let at = |f: &str| format!("models[{i}].head.{f}");
    let kind = m.head.kind();
    if !m.adapter.heads().contains(&kind) {
        let allowed: Vec<&str> = m.adapter.heads().iter().map(|h| h.name()).collect();
        out.push(Issue::new(
            at("kind"),
            format!(
                "adapter `{}` cannot produce a `{}` head (it gives: {})",
                m.adapter.name(),
                kind.name(),
                allowed.join(", ")
            ),
        ));
        return;
    }
    let classes = m.head.classes();
    if m.adapter.is_coco_detector() {
        if classes.is_empty() {
            out.push(Issue::new(
                at("classes"),
                "list the COCO classes to count, e.g. [person] or [vehicle]",
            ));
        }
        let names: Vec<String> = COCO_CLASSES
            .iter()
            .chain(COCO_GROUPS.iter().map(|(g, _)| g))
            .map(|s| s.to_string())
            .collect();
        for (j, c) in classes.iter().enumerate() {
            if coco_class_indices(c).is_none() {
                let hint = closest(c, &names)
                    .map(|b| format!(": did you mean `{b}`?"))
                    .unwrap_or_default();
                out.push(Issue::new(
                    format!("models[{i}].head.classes[{j}]"),
                    format!(
                        "`{c}` is not a COCO-80 class or group{hint} (see COCO_CLASSES; groups: vehicle, object)"
                    ),
                ));
            }
        }
        let mut seen = HashSet::new();
        for (j, c) in classes.iter().enumerate() {
            if !seen.insert(c) {
                out.push(Issue::new(
                    format!("models[{i}].head.classes[{j}]"),
                    format!("class `{c}` is listed twice"),
                ));
            }
        }
    } else if let Some(only) = m.adapter.single_class() {
        for (j, c) in classes.iter().enumerate() {
            if c != only {
                out.push(Issue::new(
                    format!("models[{i}].head.classes[{j}]"),
                    format!(
                        "adapter `{}` only finds `{only}`: write [{only}] or leave `classes` out",
                        m.adapter.name()
                    ),
                ));
            }
        }
    }
    match &m.head {
        HeadConfig::Occupancy { rows, cols, .. } => {
            for (name, v) in [("rows", rows), ("cols", cols)] {
                if *v < 1 {
                    out.push(Issue::new(at(name), "must be at least 1"));
                }
            }
        }
        HeadConfig::Boxes {
            grid, max_boxes, ..
        } => {
            for (name, v) in [("grid", grid), ("max_boxes", max_boxes)] {
                if *v < 1 {
                    out.push(Issue::new(at(name), "must be at least 1"));
                }
            }
        }
        HeadConfig::Probs { groups } | HeadConfig::Label { groups }
            if !groups.is_empty() && m.adapter == AdapterKind::EfficientnetLite =>
        {
            if let Err(e) = check_class_groups(groups, IMAGENET_CLASSES) {
                out.push(Issue::new(at("groups"), e));
            }
        }
        _ => {}
    }
}

fn check_links(l: &LinksConfig, base_dir: &Path, out: &mut Vec<Issue>) {
    if let Some(b) = &l.bundle {
        let path = resolve_path(base_dir, b);
        if !path.exists() {
            out.push(Issue::new(
                "links.bundle",
                format!(
                    "link bundle not found: {} (`mlink train` writes one)",
                    path.display()
                ),
            ));
        }
    }
    for (name, v) in [
        ("hidden_factor", l.hidden_factor),
        ("epochs", l.epochs),
        ("batch_size", l.batch_size),
    ] {
        if v < 1 {
            out.push(Issue::new(format!("links.{name}"), "must be at least 1"));
        }
    }
    positive(out, "links.learning_rate".into(), l.learning_rate);
    open_unit(out, "links.validation_split", l.validation_split);
}

fn check_scheduler(p: &Pipeline, out: &mut Vec<Issue>) {
    let s = &p.scheduler;
    let b = &s.budget;
    if b.memory_mb.is_none() && b.ms_per_frame.is_none() {
        out.push(Issue::new(
            "scheduler.budget",
            "give at least one resource: `memory_mb`, `ms_per_frame` or both",
        ));
    }
    let declared: Option<Vec<(&str, &DeclaredCost)>> = p
        .models
        .iter()
        .map(|m| match &m.cost {
            CostConfig::Declared(c) => Some((m.id.as_str(), c)),
            CostConfig::Auto => None,
        })
        .collect();
    type Resource = (&'static str, &'static str, fn(&DeclaredCost) -> f64);
    let resources: [(Option<f64>, Resource); 2] = [
        (b.memory_mb, ("memory_mb", "MB of memory", |c| c.memory_mb)),
        (
            b.ms_per_frame,
            ("ms_per_frame", "ms per frame", |c| c.latency_ms),
        ),
    ];
    for (budget, (field, unit, cost)) in resources {
        let Some(budget) = budget else { continue };
        let path = format!("scheduler.budget.{field}");
        if budget.is_nan() || budget <= 0.0 {
            out.push(Issue::new(
                path,
                format!("must be positive, found {budget}"),
            ));
            continue;
        }
        // Only when every cost is declared: a profiled model might be cheaper.
        let Some(declared) = &declared else { continue };
        let cheapest = declared
            .iter()
            .min_by(|x, y| cost(x.1).total_cmp(&cost(y.1)));
        if let Some((id, c)) = cheapest
            && budget < cost(c)
        {
            out.push(Issue::new(
                path,
                format!(
                    "the budget of {budget} {unit} is smaller than the cheapest model, `{id}` \
                     ({} {unit}): no model could ever run",
                    cost(c)
                ),
            ));
        }
    }
    positive(out, "scheduler.period_s".into(), s.period_s);
    if !(s.profiling_ratio > 0.0 && s.profiling_ratio <= 1.0) {
        out.push(Issue::new(
            "scheduler.profiling_ratio",
            format!(
                "must be in (0, 1] (a share of the frames), found {}",
                s.profiling_ratio
            ),
        ));
    }
    if let Some(m) = s.drift_margin {
        open_unit(out, "scheduler.drift_margin", m);
    }
    for (name, v) in [
        ("scheduler.latency_allowance_s", s.latency_allowance_s),
        ("scheduler.load_ms_per_mb", s.load_ms_per_mb),
    ] {
        if !(v.is_finite() && v >= 0.0) {
            out.push(Issue::new(
                name,
                format!("must be a finite number of at least 0, found {v}"),
            ));
        }
    }
    let age = s.max_output_age_s;
    if age.is_nan() || age <= 0.0 {
        out.push(Issue::new(
            "scheduler.max_output_age_s",
            format!("must be more than 0 seconds (`.inf`: never refreshed), found {age}"),
        ));
    }
}

fn check_adaptation(a: &AdaptationConfig, out: &mut Vec<Issue>) {
    match (a.policy, a.uncertainty_threshold) {
        (AdaptationPolicy::Uncertainty, None) => out.push(Issue::new(
            "adaptation.uncertainty_threshold",
            "policy `uncertainty` needs `uncertainty_threshold`",
        )),
        (_, Some(t)) => positive(out, "adaptation.uncertainty_threshold".into(), t),
        _ => {}
    }
    if let Some(g) = &a.aggregator {
        if g.url.starts_with("https://") {
            // The aggregator client speaks plain HTTP only; refusing here beats a run that
            // starts and then cannot take part in any round.
            out.push(Issue::new(
                "adaptation.aggregator.url",
                format!(
                    "`{}`: the aggregator client has no TLS; use an http:// URL (behind a TLS \
                     tunnel or on a private network)",
                    g.url
                ),
            ));
        } else if !g.url.starts_with("http://") {
            out.push(Issue::new(
                "adaptation.aggregator.url",
                format!("`{}` is not an http:// URL", g.url),
            ));
        }
        for (name, v) in [("token_env", &g.token_env), ("edge_id", &g.edge_id)] {
            if v.is_empty() {
                out.push(Issue::new(
                    format!("adaptation.aggregator.{name}"),
                    "must not be empty",
                ));
            }
        }
    }
}

fn check_sinks(sinks: &[SinkConfig], out: &mut Vec<Issue>) {
    for (i, s) in sinks.iter().enumerate() {
        match s {
            SinkConfig::Jsonl { rotate_mb, .. } => {
                positive(out, format!("sinks[{i}].rotate_mb"), *rotate_mb)
            }
            SinkConfig::Mqtt { host, buffer, .. } => {
                if host.is_empty() {
                    out.push(Issue::new(format!("sinks[{i}].host"), "must not be empty"));
                }
                if *buffer < 1 {
                    out.push(Issue::new(
                        format!("sinks[{i}].buffer"),
                        "must be at least 1",
                    ));
                }
            }
            SinkConfig::Stdout => {}
        }
    }
}

fn positive(out: &mut Vec<Issue>, path: String, v: f64) {
    if !(v > 0.0 && v.is_finite()) {
        out.push(Issue::new(
            path,
            format!("must be a positive number, found {v}"),
        ));
    }
}

fn open_unit(out: &mut Vec<Issue>, path: &str, v: f64) {
    if !(v > 0.0 && v < 1.0) {
        out.push(Issue::new(
            path,
            format!("must be strictly between 0 and 1, found {v}"),
        ));
    }
}
