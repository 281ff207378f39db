//! Seeded mutations: byte-level damage (bit flips, truncation, splices, repeats, huge numbers)
//! and structure-aware edits of JSON values, so that damaged inputs get past the syntax checks
//! and reach the loaders' semantic checks.

use serde_json::Value;

/// Largest input a mutation may produce: loaders must reject damage, not be tested on size.
pub const MAX_INPUT: usize = 1 << 20;

/// SplitMix64: small, seedable, and the same on every platform and crate version.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// True with probability `1 / n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Numbers that break parsers and size computations: limits of every integer width, their
/// neighbours, floats that overflow, NaN spellings and long digit runs.
pub const INTERESTING_NUMBERS: &[&str] = &[
    "0",
    "-0",
    "-1",
    "1",
    "2",
    "63",
    "64",
    "65",
    "127",
    "255",
    "256",
    "65535",
    "65536",
    "2147483647",
    "2147483648",
    "-2147483649",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "1e308",
    "-1e308",
    "1e999",
    "-1e999",
    "1e-999",
    "0.0000001",
    "NaN",
    "nan",
    ".nan",
    "inf",
    "-inf",
    ".inf",
    "1.5",
    "99999999999999999999999999999999999999999999999999",
];

const INTERESTING_U32: &[u32] = &[
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x100,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fffe,
    0xffff_ffff,
];

/// One to four byte-level mutations of `data`; `others` are splice partners.
pub fn mutate_bytes(rng: &mut Rng, data: &[u8], others: &[Vec<u8>]) -> Vec<u8> {
    let mut out = data.to_vec();
    for _ in 0..1 + rng.below(4) {
        mutate_once(rng, &mut out, others);
    }
    out.truncate(MAX_INPUT);
    out
}

fn mutate_once(rng: &mut Rng, out: &mut Vec<u8>, others: &[Vec<u8>]) {
    let len = out.len();
    match rng.below(11) {
        // Flip one bit.
        0 if len > 0 => {
            let i = rng.below(len);
            out[i] ^= 1 << rng.below(8);
        }
        // Overwrite a byte with a boundary value.
        1 if len > 0 => {
            let i = rng.below(len);
            out[i] = *rng.pick(&[0u8, 0xff, 0x7f, 0x80, b'\n', b'"', b'{', b'[', b':', b'-']);
        }
        // Truncate.
        2 => out.truncate(rng.below(len + 1)),
        // Delete a range.
        3 if len > 0 => {
            let a = rng.below(len);
            let b = (a + 1 + rng.below(64)).min(len);
            out.drain(a..b);
        }
        // Insert random bytes.
        4 => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            out.splice(at..at, bytes);
        }
        // Repeat a range many times (deep nesting, long lines, duplicated records).
        5 if len > 0 => {
            let a = rng.below(len);
            let b = (a + 1 + rng.below(32)).min(len);
            let chunk = out[a..b].to_vec();
            let most = if rng.one_in(4) { 5000 } else { 8 };
            let times = 1 + rng.below(most);
            let extra: Vec<u8> = chunk
                .iter()
                .copied()
                .cycle()
                .take((chunk.len() * times).min(MAX_INPUT / 2))
                .collect();
            out.splice(b..b, extra);
        }
        // Splice: our prefix with another input's suffix.
        6 if !others.is_empty() => {
            let other = rng.pick(others);
            let cut = rng.below(len + 1);
            let from = rng.below(other.len() + 1);
            out.truncate(cut);
            out.extend_from_slice(&other[from..]);
        }
        // Replace a decimal number with an interesting one.
        7 => replace_number(rng, out),
        // Write a boundary u32 (little-endian) over binary lengths and counts.
        8 if len >= 4 => {
            let i = rng.below(len - 3);
            let v = *rng.pick(INTERESTING_U32);
            out[i..i + 4].copy_from_slice(&v.to_le_bytes());
        }
        // Swap two ranges' contents by copying one over the other.
        9 if len > 2 => {
            let a = rng.below(len);
            let b = rng.below(len);
            let n = (1 + rng.below(16)).min(len - a).min(len - b);
            let chunk = out[a..a + n].to_vec();
            out[b..b + n].copy_from_slice(&chunk);
        }
        // Remove a whole line.
        _ => {
            let lines: Vec<usize> = out
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i)
                .collect();
            if lines.len() >= 2 {
                let k = rng.below(lines.len() - 1);
                out.drain(lines[k] + 1..=lines[k + 1]);
            } else {
                out.truncate(rng.below(len + 1));
            }
        }
    }
}

/// Replaces one run of ASCII digits (or inserts at a random place when there is none).
fn replace_number(rng: &mut Rng, out: &mut Vec<u8>) {
    let runs: Vec<(usize, usize)> = {
        let mut runs = Vec::new();
        let mut i = 0;
        while i < out.len() {
            if out[i].is_ascii_digit() {
                let start = i;
                while i < out.len() && (out[i].is_ascii_digit() || out[i] == b'.') {
                    i += 1;
                }
                runs.push((start, i));
            } else {
                i += 1;
            }
        }
        runs
    };
    let number = interesting_number(rng);
    match runs.is_empty() {
        true => {
            let at = rng.below(out.len() + 1);
            out.splice(at..at, number.into_bytes());
        }
        false => {
            let (a, b) = *rng.pick(&runs);
            out.splice(a..b, number.into_bytes());
        }
    }
}

/// An interesting number as text; now and then a very long run of digits.
pub fn interesting_number(rng: &mut Rng) -> String {
    if rng.one_in(12) {
        "9".repeat(1 + rng.below(4000))
    } else {
        rng.pick(INTERESTING_NUMBERS).to_string()
    }
}

/// A structure-aware edit of `value`: one node replaced, removed, duplicated or resized.
pub fn mutate_json(rng: &mut Rng, value: &Value) -> Value {
    let mut v = value.clone();
    for _ in 0..1 + rng.below(3) {
        let n = count_nodes(&v);
        let target = rng.below(n);
        let mut seen = 0;
        edit_nth(rng, &mut v, target, &mut seen);
    }
    v
}

fn count_nodes(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count_nodes).sum(),
        Value::Object(o) => o.values().map(count_nodes).sum(),
        _ => 0,
    }
}

/// Walks the tree in pre-order and edits node number `target`. Returns true once done.
fn edit_nth(rng: &mut Rng, v: &mut Value, target: usize, seen: &mut usize) -> bool {
    if *seen == target {
        edit_node(rng, v);
        return true;
    }
    *seen += 1;
    match v {
        Value::Array(a) => {
            for c in a.iter_mut() {
                if edit_nth(rng, c, target, seen) {
                    return true;
                }
            }
        }
        Value::Object(o) => {
            for c in o.values_mut() {
                if edit_nth(rng, c, target, seen) {
                    return true;
                }
            }
        }
        _ => {}
    }
    false
}

fn edit_node(rng: &mut Rng, v: &mut Value) {
    match v {
        Value::Array(a) if !a.is_empty() && rng.one_in(2) => match rng.below(4) {
            0 => {
                a.remove(rng.below(a.len()));
            }
            1 => {
                let i = rng.below(a.len());
                let item = a[i].clone();
                let most = if rng.one_in(8) { 2000 } else { 3 };
                let times = 1 + rng.below(most);
                for _ in 0..times {
                    a.push(item.clone());
                }
            }
            2 => a.clear(),
            _ => a.reverse(),
        },
        Value::Object(o) if !o.is_empty() && rng.one_in(2) => {
            let keys: Vec<String> = o.keys().cloned().collect();
            let key = rng.pick(&keys).clone();
            match rng.below(3) {
                0 => {
                    o.remove(&key);
                }
                1 => {
                    // An unknown field next to the known ones.
                    let item = o[&key].clone();
                    o.insert(format!("{key}_x"), item);
                }
                _ => {
                    // The value of another field under this field's name.
                    let other = rng.pick(&keys).clone();
                    let item = o[&other].clone();
                    o.insert(key, item);
                }
            }
        }
        _ => *v = replacement(rng, v),
    }
}

/// A value of another type, a boundary number, or an oversized value.
fn replacement(rng: &mut Rng, old: &Value) -> Value {
    match rng.below(10) {
        0 => Value::Null,
        1 => Value::Bool(rng.one_in(2)),
        2 => Value::String(String::new()),
        3 => Value::String(
            rng.pick(&[
                "vector",
                "sequence",
                "tokens",
                "single_label",
                "count",
                "x",
                "\u{0}",
            ])
            .to_string(),
        ),
        4 => {
            // A boundary number: parsed back from text so that it keeps its exact spelling
            // when serde_json can hold it; otherwise a float extreme.
            let text = rng.pick(INTERESTING_NUMBERS);
            serde_json::from_str::<Value>(text).unwrap_or(Value::from(f64::MAX))
        }
        5 => Value::from(rng.next_u64() >> rng.below(64)),
        6 => Value::from(-(rng.below(1000) as i64) - 1),
        7 => {
            // Nesting deep enough to test recursion limits.
            let mut v = Value::from(0);
            for _ in 0..1 + rng.below(300) {
                v = Value::Array(vec![v]);
            }
            v
        }
        8 => Value::Array(vec![Value::from(0.0); 1 + rng.below(5000)]),
        _ => match old {
            Value::String(s) => Value::String(s.repeat(2 + rng.below(500))),
            Value::Number(n) => {
                let x = n.as_f64().unwrap_or(0.0);
                Value::from(-x - 1.0)
            }
            other => Value::Array(vec![other.clone(); 2]),
        },
    }
}
