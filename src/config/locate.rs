//! Finding where a field path (`models[2].cost.memory_mb`) sits in a pipeline file's source,
//! so that errors found after parsing point at the right line and column.
//!
//! The lookup walks the document with the same YAML parser that reads it, skipping everything
//! off the path, and stops at the target node by raising a marker error: the parser stamps
//! every error with the position of the node being read, which is exactly the position
//! wanted. Anchors, flow style and comments are therefore handled as the loader handles them.

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// Splits `models[2].cost.memory_mb` into its segments; `.` or an empty string is the root.
pub fn parse_path(path: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            out.push(Segment::Key(name.to_string()));
        }
        while let Some(close) = rest.find(']') {
            match rest[1..close].parse() {
                Ok(i) => out.push(Segment::Index(i)),
                Err(_) => out.push(Segment::Key(rest[1..close].to_string())),
            }
            rest = &rest[close + 1..];
        }
    }
    out
}

/// 1-based line and column of the value at `path`, or of its deepest ancestor present in the
/// source when the path goes further than the file does (a missing field is reported at the
/// mapping that lacks it). `None` when the text does not parse.
pub fn locate_value(text: &str, path: &str) -> Option<(usize, usize)> {
    run(text, &parse_path(path), false)
}

/// Like [`locate_value`] but for the last key of `path` itself (where an unknown or misplaced
/// field is written).
pub fn locate_key(text: &str, path: &str) -> Option<(usize, usize)> {
    run(text, &parse_path(path), true)
}

const FOUND: &str = "\u{0}mlink-locate-found";

fn run(text: &str, path: &[Segment], want_key: bool) -> Option<(usize, usize)> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let err = match (Walk {
        rest: path,
        want_key,
    })
    .deserialize(de)
    {
        Ok(()) => return None,
        Err(e) => e,
    };
    if !err.to_string().contains(FOUND) {
        return None;
    }
    err.location().map(|l| (l.line(), l.column()))
}

struct Walk<'a> {
    rest: &'a [Segment],
    want_key: bool,
}

fn found<E: de::Error>() -> E {
    E::custom(FOUND)
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

// Every visit ends in `found()`: at the target node, at a node where the path cannot go on,
// or (through the nested walk) deeper down.
impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(found())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(found())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(found())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(found())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(found())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(found())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Err(found())
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(found())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Segment::Index(target), rest)) = self.rest.split_first() else {
            return Err(found());
        };
        for _ in 0..*target {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Err(found());
            }
        }
        seq.next_element_seed(Walk {
            rest,
            want_key: self.want_key,
        })?;
        Err(found())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Segment::Key(target), rest)) = self.rest.split_first() else {
            return Err(found());
        };
        let stop_at_key = self.want_key && rest.is_empty();
        while let Some(key) = map.next_key_seed(Key {
            target,
            stop_here: stop_at_key,
        })? {
            if key {
                map.next_value_seed(Walk {
                    rest,
                    want_key: self.want_key,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Err(found())
    }
}

/// Reads a mapping key; says whether it is the wanted one, or stops on it when the key's own
/// position is wanted.
struct Key<'a> {
    target: &'a str,
    stop_here: bool,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl Key<'_> {
    fn check<E: de::Error>(self, key: &str) -> Result<bool, E> {
        if key != self.target {
            Ok(false)
        } else if self.stop_here {
            Err(found())
        } else {
            Ok(true)
        }
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        self.check(v)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
version: 1
cameras:
  - id: a
    uri: test:ball
  - id: b
    uri: rtsp://h/x
models:
  - {id: m, cost: {memory_mb: 5, latency_ms: 2}}
scheduler:
  budget:
    memory_mb: 100
";

    #[test]
    fn paths_parse() {
        assert_eq!(
            parse_path("models[2].cost.memory_mb"),
            vec![
                Segment::Key("models".into()),
                Segment::Index(2),
                Segment::Key("cost".into()),
                Segment::Key("memory_mb".into())
            ]
        );
        assert!(parse_path(".").is_empty());
    }

    #[test]
    fn values_and_keys_are_found() {
        assert_eq!(locate_value(DOC, "version"), Some((1, 10)));
        assert_eq!(locate_value(DOC, "cameras[1].uri"), Some((6, 10)));
        assert_eq!(locate_key(DOC, "cameras[1].uri"), Some((6, 5)));
        assert_eq!(locate_value(DOC, "cameras[1]"), Some((5, 5)));
        assert_eq!(
            locate_value(DOC, "models[0].cost.latency_ms"),
            Some((8, 46))
        );
        assert_eq!(
            locate_value(DOC, "scheduler.budget.memory_mb"),
            Some((11, 16))
        );
    }

    #[test]
    fn missing_parts_fall_back_to_the_deepest_ancestor() {
        assert_eq!(
            locate_value(DOC, "scheduler.budget.ms_per_frame"),
            Some((11, 5))
        );
        assert_eq!(locate_value(DOC, "cameras[7].id"), Some((3, 3)));
        assert_eq!(locate_value(DOC, "sinks"), Some((1, 1)));
    }

    #[test]
    fn unparsable_text_gives_none() {
        assert_eq!(locate_value("a: 1\nb: [x, {", "b[1].c"), None);
    }
}
