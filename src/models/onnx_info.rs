//! Reads the declared inputs and outputs of an ONNX file without ONNX Runtime: a minimal
//! protobuf walk over `ModelProto.graph.{input,output}`. Used to state a head's output spec
//! from the file alone and to reject files that are not ONNX models before a session is made.

use super::ModelError;
use std::collections::HashSet;
use std::path::Path;

/// One declared graph input or output.
#[derive(Clone, Debug, PartialEq)]
pub struct IoInfo {
    pub name: String,
    /// ONNX `TensorProto.DataType` (1 = float, 6 = int32, 7 = int64).
    pub elem_type: i32,
    /// Dimensions; `None` for symbolic or unknown ones.
    pub dims: Vec<Option<i64>>,
}

/// The graph signature of an ONNX file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Signature {
    pub inputs: Vec<IoInfo>,
    pub outputs: Vec<IoInfo>,
}

/// Reads the signature of the ONNX file at `path`.
pub fn read_signature(path: &Path) -> Result<Signature, ModelError> {
    if !path.exists() {
        return Err(ModelError::MissingFile {
            path: path.to_path_buf(),
        });
    }
    let bytes = std::fs::read(path).map_err(|e| ModelError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    parse_signature(&bytes).map_err(|m| ModelError::BadFile {
        path: path.to_path_buf(),
        message: format!("not a readable ONNX model ({m})"),
    })
}

/// Parses the signature from the bytes of an ONNX file.
pub fn parse_signature(bytes: &[u8]) -> Result<Signature, String> {
    let mut graph = None;
    for field in Fields(bytes) {
        let (num, value) = field?;
        if num == 7 {
            graph = Some(value.bytes()?);
        }
    }
    let graph = graph.ok_or("no graph")?;
    let mut sig = Signature::default();
    let mut initializers = HashSet::new();
    for field in Fields(graph) {
        let (num, value) = field?;
        match num {
            5 => {
                for f in Fields(value.bytes()?) {
                    let (n, v) = f?;
                    if n == 8 {
                        initializers.insert(v.string()?);
                    }
                }
            }
            11 => sig.inputs.push(value_info(value.bytes()?)?),
            12 => sig.outputs.push(value_info(value.bytes()?)?),
            _ => {}
        }
    }
    // Models of IR version < 4 list initializers among the inputs.
    sig.inputs.retain(|i| !initializers.contains(&i.name));
    if sig.inputs.is_empty() || sig.outputs.is_empty() {
        return Err("the graph declares no inputs or no outputs".into());
    }
    Ok(sig)
}

fn value_info(bytes: &[u8]) -> Result<IoInfo, String> {
    let mut info = IoInfo {
        name: String::new(),
        elem_type: 0,
        dims: Vec::new(),
    };
    for f in Fields(bytes) {
        match f? {
            (1, v) => info.name = v.string()?,
            (2, v) => {
                // TypeProto.tensor_type
                for f in Fields(v.bytes()?) {
                    if let (1, t) = f? {
                        for f in Fields(t.bytes()?) {
                            match f? {
                                (1, Value::Varint(e)) => info.elem_type = e as i32,
                                (2, shape) => {
                                    for f in Fields(shape.bytes()?) {
                                        if let (1, dim) = f? {
                                            let mut d = None;
                                            for f in Fields(dim.bytes()?) {
                                                if let (1, Value::Varint(x)) = f? {
                                                    d = Some(x as i64);
                                                }
                                            }
                                            info.dims.push(d);
                                        }
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(info)
}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

impl<'a> Value<'a> {
    fn bytes(self) -> Result<&'a [u8], String> {
        match self {
            Value::Bytes(b) => Ok(b),
            _ => Err("expected a length-delimited field".into()),
        }
    }
    fn string(self) -> Result<String, String> {
        Ok(String::from_utf8_lossy(self.bytes()?).into_owned())
    }
}

/// Iterates over the (field number, value) pairs of one protobuf message.
struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Value<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let r = (|| {
            let key = varint(&mut self.0)?;
            let num = (key >> 3) as u32;
            let value = match key & 7 {
                0 => Value::Varint(varint(&mut self.0)?),
                1 => {
                    self.0 = self.0.get(8..).ok_or("truncated")?;
                    Value::Fixed
                }
                2 => {
                    let len = varint(&mut self.0)? as usize;
                    if len > self.0.len() {
                        return Err("truncated".to_string());
                    }
                    let (head, tail) = self.0.split_at(len);
                    self.0 = tail;
                    Value::Bytes(head)
                }
                5 => {
                    self.0 = self.0.get(4..).ok_or("truncated")?;
                    Value::Fixed
                }
                w => return Err(format!("invalid wire type {w}")),
            };
            if num == 0 {
                return Err("invalid field number 0".into());
            }
            Ok((num, value))
        })();
        if r.is_err() {
            self.0 = &[];
        }
        Some(r)
    }
}

fn varint(buf: &mut &[u8]) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first().ok_or("truncated")?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint too long".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_garbage_and_truncation() {
        assert!(parse_signature(b"").is_err());
        assert!(parse_signature(b"this is not a model at all").is_err());
        assert!(parse_signature(&[0x3a, 0x10, 1, 2]).is_err());
    }
}
