//! Reading a pipeline file into [`Pipeline`], turning parser and serde errors into located,
//! readable [`ConfigError`]s.

use super::locate::{locate_key, locate_value};
use super::{ConfigError, Pipeline};
use std::path::Path;

/// Reads and parses a pipeline file (no semantic checks: see [`super::load_and_validate`]).
pub fn load(file: &Path) -> Result<Pipeline, Vec<ConfigError>> {
    let text = read(file)?;
    parse_str(&text, &file.display().to_string())
}

pub(super) fn read(file: &Path) -> Result<String, Vec<ConfigError>> {
    std::fs::read_to_string(file).map_err(|e| {
        vec![ConfigError {
            file: file.display().to_string(),
            line: 0,
            column: 0,
            path: String::new(),
            message: format!("cannot read the pipeline file: {e}"),
        }]
    })
}

/// Parses pipeline text; `file` is the name used in error messages.
pub fn parse_str(text: &str, file: &str) -> Result<Pipeline, Vec<ConfigError>> {
    let at = |line: usize, column: usize, path: String, message: String| {
        vec![ConfigError {
            file: file.to_string(),
            line,
            column,
            path,
            message,
        }]
    };

    // Syntax first, on its own, so that a syntax error is never reported as a field's error.
    match serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text) {
        Err(e) => {
            let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
            return Err(at(
                line,
                column,
                String::new(),
                format!("YAML syntax error: {}", strip_mark(&e.to_string())),
            ));
        }
        Ok(serde_yaml_ng::Value::Null) => {
            return Err(at(
                1,
                1,
                String::new(),
                "the file is empty: expected a mapping with `version`, `cameras`, `models` and \
                 `scheduler`"
                    .into(),
            ));
        }
        Ok(_) => {}
    }

    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = match e.path().to_string() {
            p if p == "." => String::new(),
            p => p,
        };
        let raw = strip_path_prefix(&strip_mark(&e.inner().to_string())).to_string();
        let (line, column) = e
            .inner()
            .location()
            .map_or((1, 1), |l| (l.line(), l.column()));
        let located = explain(text, path, raw, (line, column));
        at(located.line, located.column, located.path, located.message)
    })
}

struct Located {
    line: usize,
    column: usize,
    path: String,
    message: String,
}

/// Rewrites a serde message for a person writing the file, and moves the position to the
/// field itself where serde reports the enclosing mapping.
fn explain(text: &str, path: String, raw: String, pos: (usize, usize)) -> Located {
    let join = |name: &str| {
        if path.is_empty() {
            name.to_string()
        } else {
            format!("{path}.{name}")
        }
    };
    let done = |path: String, pos: (usize, usize), message: String| Located {
        line: pos.0,
        column: pos.1,
        path,
        message,
    };

    if let Some(rest) = raw.strip_prefix("unknown field ") {
        let name = first_quoted(rest).unwrap_or_default();
        let allowed = quoted_after_expected(rest);
        // The path may or may not already end with the unknown key.
        let field_path = if path.rsplit('.').next() == Some(name.as_str()) {
            path.clone()
        } else {
            join(&name)
        };
        let pos = locate_key(text, &field_path).unwrap_or(pos);
        return done(field_path, pos, unknown("field", &name, &allowed));
    }
    if let Some(rest) = raw.strip_prefix("unknown variant ") {
        let name = first_quoted(rest).unwrap_or_default();
        let allowed = quoted_after_expected(rest);
        return done(path, pos, unknown("value", &name, &allowed));
    }
    if let Some(rest) = raw.strip_prefix("missing field ") {
        let name = first_quoted(rest).unwrap_or_default();
        let parent = locate_value(text, &path).unwrap_or(pos);
        return done(
            join(&name),
            parent,
            format!("missing required field `{name}`"),
        );
    }
    // A field that does not belong to the kind chosen for a head or a sink.
    if raw.starts_with('`') && raw.contains(" not allowed for ") {
        let name = first_quoted(&raw).unwrap_or_default();
        let field_path = join(&name);
        let pos = locate_key(text, &field_path).unwrap_or(pos);
        return done(field_path, pos, raw);
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = raw.strip_prefix(prefix)
            && let Some((found, expected)) = rest.split_once(", expected ")
        {
            return done(
                path,
                pos,
                format!(
                    "expected {}, found {}",
                    expected_words(expected),
                    found_words(found)
                ),
            );
        }
    }
    done(path, pos, raw)
}

/// "unknown field `x`: did you mean `y`? (allowed: ...)".
fn unknown(what: &str, name: &str, allowed: &[String]) -> String {
    let mut msg = format!("unknown {what} `{name}`");
    if let Some(best) = closest(name, allowed) {
        msg.push_str(&format!(": did you mean `{best}`?"));
    }
    if allowed.is_empty() {
        msg.push_str(" (no fields are allowed here)");
    } else {
        let list: Vec<String> = allowed.iter().map(|a| format!("`{a}`")).collect();
        msg.push_str(&format!(" (allowed: {})", list.join(", ")));
    }
    msg
}

/// The allowed name closest to `name`, if any is close enough to be a likely typo.
pub(crate) fn closest<'a>(name: &str, allowed: &'a [String]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|a| (strsim::jaro_winkler(name, a), a))
        .filter(|(score, _)| *score >= 0.75)
        .max_by(|x, y| x.0.total_cmp(&y.0))
        .map(|(_, a)| a.as_str())
}

fn first_quoted(s: &str) -> Option<String> {
    let start = s.find('`')? + 1;
    let len = s[start..].find('`')?;
    Some(s[start..start + len].to_string())
}

fn quoted_after_expected(s: &str) -> Vec<String> {
    let Some(i) = s.find("expected") else {
        return Vec::new();
    };
    s[i..]
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn expected_words(expected: &str) -> String {
    match expected.trim() {
        "f64" | "f32" => "a number".into(),
        "u8" => "an integer from 0 to 255".into(),
        "u16" => "an integer from 0 to 65535".into(),
        "u32" | "u64" | "usize" => "a non-negative integer".into(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "an integer".into(),
        "a sequence" => "a list".into(),
        "a map" => "a mapping".into(),
        "a path string" => "a path".into(),
        e if e.starts_with("struct ") => "a mapping".into(),
        e if e.starts_with("enum ") => "one of the names listed in docs/pipeline.md".into(),
        e => e.to_string(),
    }
}

fn found_words(found: &str) -> String {
    let found = found.trim();
    if let Some(s) = found.strip_prefix("string ") {
        return s.to_string();
    }
    for prefix in ["integer ", "floating point ", "boolean "] {
        if let Some(v) = found.strip_prefix(prefix) {
            return v.trim_matches('`').to_string();
        }
    }
    match found {
        "map" => "a mapping".into(),
        "sequence" => "a list".into(),
        "unit value" => "nothing (null)".into(),
        f => f.to_string(),
    }
}

/// Drops the parser's own " at line L column C" (the position is reported separately).
fn strip_mark(msg: &str) -> String {
    let mut out = msg.to_string();
    while let Some(i) = out.find(" at line ") {
        let tail = &out[i + " at line ".len()..];
        let digits = |s: &str| s.chars().take_while(char::is_ascii_digit).count();
        let n = digits(tail);
        let rest = &tail[n..];
        let Some(col) = rest.strip_prefix(" column ") else {
            break;
        };
        let m = digits(col);
        if n == 0 || m == 0 {
            break;
        }
        let end = i + " at line ".len() + n + " column ".len() + m;
        out.replace_range(i..end, "");
    }
    out
}

/// Drops the parser's own `path: ` prefix (the path is reported separately).
fn strip_path_prefix(msg: &str) -> &str {
    match msg.split_once(": ") {
        Some((head, tail)) if !head.contains([' ', '`']) && !tail.is_empty() => tail,
        _ => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_and_prefixes_are_stripped() {
        assert_eq!(
            strip_mark("did not find expected key at line 3 column 5, while parsing"),
            "did not find expected key, while parsing"
        );
        assert_eq!(
            strip_path_prefix("models[0].cost: invalid type: string"),
            "invalid type: string"
        );
        assert_eq!(
            strip_path_prefix("invalid type: string"),
            "invalid type: string"
        );
    }

    #[test]
    fn closest_name_is_suggested_only_when_close() {
        let allowed = vec!["memory_mb".to_string(), "latency_ms".to_string()];
        assert_eq!(closest("memry_mb", &allowed), Some("memory_mb"));
        assert_eq!(closest("colour", &allowed), None);
    }
}
