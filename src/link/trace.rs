//! Traces: the file of aligned samples that recording writes and training, evaluation and replay
//! read. One record per analysed frame: camera id, sequence number, time, every model's output
//! (or its absence) and optional low-level frame features.
//!
//! # Encoding (version 3; versions 1 and 2 are still read)
//!
//! All integers and floats are little-endian.
//!
//! ```text
//! magic        8 bytes   b"MLTRACE\0"
//! version      u32       TRACE_VERSION
//! header_len   u32       length of the JSON header
//! header       bytes     TraceHeader as JSON (models with ids and specs, feature names, source)
//! header_crc   u32       CRC-32 (IEEE) of the JSON header
//! records      repeated:
//!   len        u32       payload length (< END_MARK)
//!   payload    bytes     one record, see below
//!   crc        u32       CRC-32 of the payload
//! end          u32       END_MARK (0xFFFF_FFFF), then u64 record count, then u32 CRC of that count
//! ```
//!
//! A record payload is: camera (u16 length + UTF-8), seq u64, time_s f64, output count u32, then
//! per output a tag u8 (0 absent, 1 vector, 2 tokens), element count u32 and the elements (f32
//! or u32); then (version 2) the view count u32 (0, or one per model) and per view a tag u8 (0
//! absent, 1 present), element count u32 and the elements (f32); then the feature count u32
//! and the features (f32); then (version 3) the thumbnail tag u8 (0 absent, 1 present) and, when
//! present, its byte count u32 and the bytes (packed RGB, `thumbnail` width x height x 3).
//!
//! Version 3 adds thumbnails: a header may give a `thumbnail` size, and a record may then hold
//! a downscaled RGB copy of its frame, so that baselines that learn from pixels (multi-task
//! networks, distilled students) are trained and replayed offline. A version 2 trace reads as
//! one without thumbnails.
//!
//! Version 2 adds the link views: each header model may name its view's entries (`view`), and
//! a record may hold every model's view (the fixed-length encoding of its raw output that
//! links take as input). A version 1 trace reads as one without views.
//!
//! The writer writes `PATH.partial` and renames it to `PATH` in [`TraceWriter::finish`], after
//! the end mark. A recording that was interrupted therefore leaves `PATH.partial` without an end
//! mark: [`TraceReader::open_partial`] reads it up to its last complete record and
//! [`TraceWriter::resume`] continues it. [`TraceReader::open`] insists on a complete file and
//! reports a missing end mark as [`TraceError::Truncated`].
//!
//! Every record is checked against the header's specs both when written and when read, so a
//! value of the wrong shape can never reach a link.

use crate::output::{OutputSpec, OutputValue};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The trace format version this build writes and the newest it reads.
pub const TRACE_VERSION: u32 = 3;
/// The first bytes of every trace file.
pub const TRACE_MAGIC: [u8; 8] = *b"MLTRACE\0";
/// The length value that marks the end of a complete trace.
const END_MARK: u32 = u32::MAX;
/// Largest record payload accepted, so that a corrupt length cannot trigger a huge allocation.
const MAX_RECORD_BYTES: u32 = 256 << 20;
/// Largest JSON header accepted.
const MAX_HEADER_BYTES: u32 = 16 << 20;
/// Records longer than this are checked against the bytes left in the file before their
/// buffer is allocated.
const LARGE_RECORD_BYTES: u32 = 64 << 10;

/// What a trace holds: the models whose outputs it records (in record order), the names of the
/// low-level frame features, and a free-form description of where it came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceHeader {
    pub models: Vec<TraceModel>,
    #[serde(default)]
    pub frame_feature_names: Vec<String>,
    #[serde(default)]
    pub source: String,
    /// The size of the frame thumbnails the records hold (version 3); `None`: no thumbnails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail: Option<ThumbnailSize>,
}

/// The size of a trace's frame thumbnails (packed RGB, 3 bytes a pixel).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThumbnailSize {
    pub width: u32,
    pub height: u32,
}

impl ThumbnailSize {
    /// Largest side accepted, so that a thumbnail stays a thumbnail (and a record stays small).
    pub const MAX_SIDE: u32 = 512;

    /// Bytes of one thumbnail.
    pub fn bytes(&self) -> usize {
        self.width as usize * self.height as usize * 3
    }

    /// Parses `WxH` (e.g. `32x32`), each side between 1 and [`Self::MAX_SIDE`].
    pub fn parse(s: &str) -> Result<Self, String> {
        let (w, h) = s
            .split_once(['x', 'X'])
            .ok_or_else(|| format!("`{s}` is not WxH (e.g. 32x32)"))?;
        let side = |v: &str| -> Result<u32, String> {
            let n: u32 = v
                .trim()
                .parse()
                .map_err(|_| format!("`{v}` in `{s}` is not a whole number"))?;
            if n == 0 || n > Self::MAX_SIDE {
                return Err(format!(
                    "thumbnail sides must be between 1 and {} pixels, not {n}",
                    Self::MAX_SIDE
                ));
            }
            Ok(n)
        };
        Ok(Self {
            width: side(w)?,
            height: side(h)?,
        })
    }
}

/// One recorded model: its id, output spec and (when profiled) its cost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceModel {
    pub id: String,
    pub spec: OutputSpec,
    #[serde(default)]
    pub memory_mb: Option<f64>,
    #[serde(default)]
    pub latency_ms: Option<f64>,
    /// The model whose boxes this model ran on (`crops_from`): it cannot run without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crops_from: Option<String>,
    /// The names of the model's link view entries (version 2); empty: no view recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub view: Vec<String>,
}

/// One analysed frame.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceRecord {
    pub camera: String,
    pub seq: u64,
    pub time_s: f64,
    /// One entry per header model, in header order; `None` when the model did not run.
    pub outputs: Vec<Option<OutputValue>>,
    /// Per header model, its link view when it ran and has one (as long as the header's
    /// `view` names); empty when the record holds no views (every version 1 record).
    pub views: Vec<Option<Vec<f32>>>,
    /// Low-level features named by the header's `frame_feature_names` (same length; may be
    /// empty when the header names none).
    pub frame_features: Vec<f32>,
    /// The frame downscaled to the header's `thumbnail` size, packed RGB (version 3); `None`
    /// when the header gives no size (or the recording had no frame for it).
    pub thumbnail: Option<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not an mlink trace (the file does not start with the trace magic)")]
    NotATrace { path: PathBuf },
    #[error(
        "{path}: trace format version {found} is newer than the supported version {supported}; \
         upgrade mlink to read it"
    )]
    NewerVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "{path}: the trace ends after {records} complete records without its end mark (the \
         recording was interrupted or the file was cut); read it with open_partial to use the \
         complete records"
    )]
    Truncated { path: PathBuf, records: u64 },
    #[error("{path}: record {record} is corrupt: {reason}")]
    Corrupt {
        path: PathBuf,
        record: u64,
        reason: String,
    },
    #[error("{path}: bad trace header: {reason}")]
    Header { path: PathBuf, reason: String },
    #[error("record {record} (camera {camera:?}, seq {seq}) does not match the header: {reason}")]
    Shape {
        record: u64,
        camera: String,
        seq: u64,
        reason: String,
    },
}

/// Checks a header for duplicate or empty model ids.
fn validate_header(header: &TraceHeader) -> Result<(), String> {
    if let Some(t) = header.thumbnail
        && (t.width == 0
            || t.height == 0
            || t.width > ThumbnailSize::MAX_SIDE
            || t.height > ThumbnailSize::MAX_SIDE)
    {
        return Err(format!(
            "thumbnail size {}x{} is outside 1..={} pixels a side",
            t.width,
            t.height,
            ThumbnailSize::MAX_SIDE
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for m in &header.models {
        if m.id.is_empty() {
            return Err("a model has an empty id".into());
        }
        if !seen.insert(m.id.as_str()) {
            return Err(format!("model id {:?} appears twice", m.id));
        }
    }
    Ok(())
}

/// Checks a record against the header: one output per model, each of the model's spec, and the
/// frame features matching the header's names.
pub fn validate_record(
    header: &TraceHeader,
    rec: &TraceRecord,
    index: u64,
) -> Result<(), TraceError> {
    let shape = |reason: String| TraceError::Shape {
        record: index,
        camera: rec.camera.clone(),
        seq: rec.seq,
        reason,
    };
    if rec.outputs.len() != header.models.len() {
        return Err(shape(format!(
            "{} outputs for {} models",
            rec.outputs.len(),
            header.models.len()
        )));
    }
    for (m, out) in header.models.iter().zip(&rec.outputs) {
        if let Some(v) = out {
            m.spec
                .check(v)
                .map_err(|e| shape(format!("model {:?}: {e}", m.id)))?;
        }
    }
    if !rec.views.is_empty() {
        if rec.views.len() != header.models.len() {
            return Err(shape(format!(
                "{} views for {} models",
                rec.views.len(),
                header.models.len()
            )));
        }
        for (m, view) in header.models.iter().zip(&rec.views) {
            if let Some(v) = view
                && v.len() != m.view.len()
            {
                return Err(shape(format!(
                    "model {:?}: a view of {} values where the header names {}",
                    m.id,
                    v.len(),
                    m.view.len()
                )));
            }
        }
    }
    if rec.frame_features.len() != header.frame_feature_names.len() {
        return Err(shape(format!(
            "{} frame features for {} names",
            rec.frame_features.len(),
            header.frame_feature_names.len()
        )));
    }
    if let Some(t) = &rec.thumbnail {
        match header.thumbnail {
            None => {
                return Err(shape(
                    "a thumbnail in a trace whose header gives no thumbnail size".into(),
                ));
            }
            Some(size) if t.len() != size.bytes() => {
                return Err(shape(format!(
                    "a thumbnail of {} bytes where the header's {}x{} RGB takes {}",
                    t.len(),
                    size.width,
                    size.height,
                    size.bytes()
                )));
            }
            Some(_) => {}
        }
    }
    if !rec.time_s.is_finite() {
        return Err(shape(format!("time {} is not finite", rec.time_s)));
    }
    if rec.camera.len() > u16::MAX as usize {
        return Err(shape("camera id longer than 65535 bytes".into()));
    }
    Ok(())
}

/// The path an unfinished recording of `path` is written to.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

/// Streams records to `PATH.partial`; [`finish`](Self::finish) seals and renames it to `PATH`.
pub struct TraceWriter {
    header: TraceHeader,
    /// The format version written (always [`TRACE_VERSION`] outside tests).
    version: u32,
    path: PathBuf,
    partial: PathBuf,
    out: BufWriter<File>,
    records: u64,
    buf: Vec<u8>,
}

impl TraceWriter {
    /// Starts a new trace at `path` (written as `PATH.partial` until finished).
    pub fn create(path: &Path, header: &TraceHeader) -> Result<Self, TraceError> {
        Self::create_version(path, header, TRACE_VERSION)
    }

    fn create_version(path: &Path, header: &TraceHeader, version: u32) -> Result<Self, TraceError> {
        validate_header(header).map_err(|reason| TraceError::Header {
            path: path.to_owned(),
            reason,
        })?;
        if version < 3 && header.thumbnail.is_some() {
            return Err(TraceError::Header {
                path: path.to_owned(),
                reason: format!("a version {version} trace cannot hold thumbnails"),
            });
        }
        let partial = partial_path(path);
        let io = |source| TraceError::Io {
            path: partial.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let json = serde_json::to_vec(header).map_err(|e| TraceError::Header {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let mut head = Vec::with_capacity(json.len() + 20);
        head.extend_from_slice(&TRACE_MAGIC);
        head.extend_from_slice(&version.to_le_bytes());
        head.extend_from_slice(&(json.len() as u32).to_le_bytes());
        head.extend_from_slice(&json);
        head.extend_from_slice(&crc32(&json).to_le_bytes());
        // The partial file appears with its whole header, so an interruption at any moment
        // leaves either no partial file or one that opens (with zero or more records).
        crate::fsutil::write_atomic(&partial, &head).map_err(io)?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&partial)
            .map_err(io)?;
        let out = BufWriter::new(file);
        Ok(Self {
            header: header.clone(),
            version,
            path: path.to_owned(),
            partial,
            out,
            records: 0,
            buf: Vec::new(),
        })
    }

    /// Continues an interrupted recording of `path`: reads `PATH.partial` up to its last
    /// complete record, cuts off anything after it and appends from there.
    pub fn resume(path: &Path) -> Result<Self, TraceError> {
        let partial = partial_path(path);
        let mut reader = TraceReader::open_partial(&partial)?;
        for rec in reader.by_ref() {
            rec?;
        }
        let good_end = reader.offset;
        let records = reader.records;
        let header = reader.header.clone();
        let version = reader.version;
        drop(reader);
        if version != TRACE_VERSION {
            return Err(TraceError::Header {
                path: partial,
                reason: format!(
                    "the unfinished recording is trace format version {version}; this build \
                     continues only version {TRACE_VERSION} recordings (record it again)"
                ),
            });
        }
        let io = |source| TraceError::Io {
            path: partial.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(&partial)
            .map_err(io)?;
        file.set_len(good_end).map_err(io)?;
        file.seek(SeekFrom::Start(good_end)).map_err(io)?;
        Ok(Self {
            header,
            version,
            path: path.to_owned(),
            partial,
            out: BufWriter::new(file),
            records,
            buf: Vec::new(),
        })
    }

    pub fn header(&self) -> &TraceHeader {
        &self.header
    }

    /// Records written so far (including those of a resumed recording).
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Appends one record after checking it against the header.
    pub fn append(&mut self, rec: &TraceRecord) -> Result<(), TraceError> {
        validate_record(&self.header, rec, self.records)?;
        self.buf.clear();
        encode_record(rec, self.version, &mut self.buf);
        if self.buf.len() as u64 >= MAX_RECORD_BYTES as u64 {
            return Err(TraceError::Shape {
                record: self.records,
                camera: rec.camera.clone(),
                seq: rec.seq,
                reason: format!("record of {} bytes is too large", self.buf.len()),
            });
        }
        let io = |source| TraceError::Io {
            path: self.partial.clone(),
            source,
        };
        self.out
            .write_all(&(self.buf.len() as u32).to_le_bytes())
            .map_err(io)?;
        self.out.write_all(&self.buf).map_err(io)?;
        self.out
            .write_all(&crc32(&self.buf).to_le_bytes())
            .map_err(io)?;
        self.records += 1;
        Ok(())
    }

    /// Pushes buffered records to the partial file, so that an interruption loses nothing
    /// appended so far.
    pub fn flush(&mut self) -> Result<(), TraceError> {
        self.out.flush().map_err(|source| TraceError::Io {
            path: self.partial.clone(),
            source,
        })
    }

    /// Writes the end mark, syncs and renames `PATH.partial` to `PATH`.
    pub fn finish(mut self) -> Result<(), TraceError> {
        let partial = self.partial.clone();
        let io = |source| TraceError::Io {
            path: partial.clone(),
            source,
        };
        let count = self.records.to_le_bytes();
        self.out.write_all(&END_MARK.to_le_bytes()).map_err(io)?;
        self.out.write_all(&count).map_err(io)?;
        self.out
            .write_all(&crc32(&count).to_le_bytes())
            .map_err(io)?;
        self.out.flush().map_err(io)?;
        self.out.get_ref().sync_all().map_err(io)?;
        std::fs::rename(&self.partial, &self.path).map_err(io)?;
        Ok(())
    }
}

/// Reads a trace record by record (a long trace never has to fit in memory).
pub struct TraceReader {
    header: TraceHeader,
    /// The file's format version (records of version 1 hold no views).
    version: u32,
    path: PathBuf,
    input: BufReader<File>,
    /// Byte offset just after the last complete record read.
    offset: u64,
    records: u64,
    /// Accept a missing end mark (reading an interrupted recording).
    tolerate_truncation: bool,
    done: bool,
    complete: bool,
}

impl TraceReader {
    /// Opens a finished trace; a missing end mark is reported as [`TraceError::Truncated`]
    /// after the last complete record.
    pub fn open(path: &Path) -> Result<Self, TraceError> {
        Self::open_with(path, false)
    }

    /// Opens a trace that may be unfinished (such as `PATH.partial`): iteration stops quietly
    /// after the last complete record.
    pub fn open_partial(path: &Path) -> Result<Self, TraceError> {
        Self::open_with(path, true)
    }

    fn open_with(path: &Path, tolerate_truncation: bool) -> Result<Self, TraceError> {
        let io = |source| TraceError::Io {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let mut input = BufReader::new(file);
        let mut magic = [0u8; 8];
        match read_exact_or_eof(&mut input, &mut magic).map_err(io)? {
            Filled::Full => {}
            _ => {
                return Err(TraceError::NotATrace {
                    path: path.to_owned(),
                });
            }
        }
        if magic != TRACE_MAGIC {
            return Err(TraceError::NotATrace {
                path: path.to_owned(),
            });
        }
        let header_err = |reason: String| TraceError::Header {
            path: path.to_owned(),
            reason,
        };
        let mut word = [0u8; 4];
        let mut read_u32 = |input: &mut BufReader<File>, what: &str| -> Result<u32, TraceError> {
            match read_exact_or_eof(input, &mut word).map_err(io)? {
                Filled::Full => Ok(u32::from_le_bytes(word)),
                _ => Err(header_err(format!(
                    "the file ends inside the header ({what})"
                ))),
            }
        };
        let version = read_u32(&mut input, "version")?;
        if version > TRACE_VERSION {
            return Err(TraceError::NewerVersion {
                path: path.to_owned(),
                found: version,
                supported: TRACE_VERSION,
            });
        }
        if version == 0 {
            return Err(header_err("version 0 is not a valid trace version".into()));
        }
        let len = read_u32(&mut input, "header length")?;
        if len > MAX_HEADER_BYTES {
            return Err(header_err(format!("header length {len} is implausible")));
        }
        let file_len = input.get_ref().metadata().map_err(io)?.len();
        if 16 + u64::from(len) + 4 > file_len {
            return Err(header_err("the file ends inside the header".into()));
        }
        let mut json = vec![0u8; len as usize];
        if !matches!(
            read_exact_or_eof(&mut input, &mut json).map_err(io)?,
            Filled::Full
        ) {
            return Err(header_err("the file ends inside the header".into()));
        }
        let crc = read_u32(&mut input, "header checksum")?;
        if crc != crc32(&json) {
            return Err(header_err("header checksum mismatch (corrupt file)".into()));
        }
        let header: TraceHeader =
            serde_json::from_slice(&json).map_err(|e| header_err(e.to_string()))?;
        validate_header(&header).map_err(&header_err)?;
        if version < 3 && header.thumbnail.is_some() {
            return Err(header_err(format!(
                "a version {version} trace cannot hold thumbnails"
            )));
        }
        Ok(Self {
            header,
            version,
            path: path.to_owned(),
            input,
            offset: 20 + len as u64,
            records: 0,
            tolerate_truncation,
            done: false,
            complete: false,
        })
    }

    pub fn header(&self) -> &TraceHeader {
        &self.header
    }

    /// The file's format version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Whether the end mark has been reached (only known after the last record was read).
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// Complete records read so far.
    pub fn records_read(&self) -> u64 {
        self.records
    }

    fn truncated(&mut self) -> Option<Result<TraceRecord, TraceError>> {
        self.done = true;
        if self.tolerate_truncation {
            None
        } else {
            Some(Err(TraceError::Truncated {
                path: self.path.clone(),
                records: self.records,
            }))
        }
    }

    fn corrupt(&mut self, reason: String) -> Option<Result<TraceRecord, TraceError>> {
        self.done = true;
        Some(Err(TraceError::Corrupt {
            path: self.path.clone(),
            record: self.records,
            reason,
        }))
    }

    fn next_record(&mut self) -> Option<Result<TraceRecord, TraceError>> {
        if self.done {
            return None;
        }
        let mut word = [0u8; 4];
        match read_exact_or_eof(&mut self.input, &mut word) {
            Err(e) => return self.io_error(e),
            Ok(Filled::Empty) | Ok(Filled::Partial) => return self.truncated(),
            Ok(Filled::Full) => {}
        }
        let len = u32::from_le_bytes(word);
        if len == END_MARK {
            let mut tail = [0u8; 12];
            match read_exact_or_eof(&mut self.input, &mut tail) {
                Err(e) => return self.io_error(e),
                Ok(Filled::Full) => {}
                Ok(_) => return self.truncated(),
            }
            let count = &tail[..8];
            let crc = u32::from_le_bytes([tail[8], tail[9], tail[10], tail[11]]);
            if crc != crc32(count) {
                return self.corrupt("end mark checksum mismatch".into());
            }
            let n = u64::from_le_bytes(count.try_into().unwrap_or([0; 8]));
            if n != self.records {
                return self.corrupt(format!(
                    "the end mark counts {n} records but {} were read",
                    self.records
                ));
            }
            let mut extra = [0u8; 1];
            match self.input.read(&mut extra) {
                Ok(0) => {}
                Ok(_) => return self.corrupt("data after the end mark".into()),
                Err(e) => return self.io_error(e),
            }
            self.done = true;
            self.complete = true;
            return None;
        }
        if len > MAX_RECORD_BYTES {
            return self.corrupt(format!("record length {len} is implausible"));
        }
        // A damaged length must not allocate more than the file holds: a large record is
        // checked against what is left of the file (a cut file then reads as truncated).
        if len > LARGE_RECORD_BYTES {
            let left = match self.input.get_ref().metadata() {
                Ok(m) => m.len().saturating_sub(self.offset + 4),
                Err(e) => return self.io_error(e),
            };
            if u64::from(len) + 4 > left {
                return self.truncated();
            }
        }
        let mut payload = vec![0u8; len as usize + 4];
        match read_exact_or_eof(&mut self.input, &mut payload) {
            Err(e) => return self.io_error(e),
            Ok(Filled::Full) => {}
            Ok(_) => return self.truncated(),
        }
        let (body, crc) = payload.split_at(len as usize);
        let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if crc != crc32(body) {
            return self.corrupt("checksum mismatch".into());
        }
        let rec = match decode_record(body, self.version) {
            Ok(r) => r,
            Err(reason) => return self.corrupt(reason),
        };
        if let Err(e) = validate_record(&self.header, &rec, self.records) {
            self.done = true;
            return Some(Err(e));
        }
        self.offset += 8 + len as u64;
        self.records += 1;
        Some(Ok(rec))
    }

    fn io_error(&mut self, source: std::io::Error) -> Option<Result<TraceRecord, TraceError>> {
        self.done = true;
        Some(Err(TraceError::Io {
            path: self.path.clone(),
            source,
        }))
    }
}

impl Iterator for TraceReader {
    type Item = Result<TraceRecord, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record()
    }
}

/// Reads a finished trace into memory.
pub fn read_all(path: &Path) -> Result<(TraceHeader, Vec<TraceRecord>), TraceError> {
    let reader = TraceReader::open(path)?;
    let header = reader.header().clone();
    let records = reader.collect::<Result<Vec<_>, _>>()?;
    Ok((header, records))
}

enum Filled {
    Empty,
    Partial,
    Full,
}

/// Fills `buf` completely, or reports how far the input got before its end.
fn read_exact_or_eof(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<Filled> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => {
                return Ok(if got == 0 {
                    Filled::Empty
                } else {
                    Filled::Partial
                });
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Filled::Full)
}

fn encode_record(rec: &TraceRecord, version: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(&(rec.camera.len() as u16).to_le_bytes());
    out.extend_from_slice(rec.camera.as_bytes());
    out.extend_from_slice(&rec.seq.to_le_bytes());
    out.extend_from_slice(&rec.time_s.to_le_bytes());
    out.extend_from_slice(&(rec.outputs.len() as u32).to_le_bytes());
    for o in &rec.outputs {
        match o {
            None => out.push(0),
            Some(OutputValue::Vector(v)) => {
                out.push(1);
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                for x in v {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
            Some(OutputValue::Tokens(t)) => {
                out.push(2);
                out.extend_from_slice(&(t.len() as u32).to_le_bytes());
                for x in t {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
        }
    }
    let views: &[Option<Vec<f32>>] = if version >= 2 { &rec.views } else { &[] };
    if version >= 2 {
        out.extend_from_slice(&(views.len() as u32).to_le_bytes());
    }
    for view in views {
        match view {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                for x in v {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
        }
    }
    out.extend_from_slice(&(rec.frame_features.len() as u32).to_le_bytes());
    for x in &rec.frame_features {
        out.extend_from_slice(&x.to_le_bytes());
    }
    if version >= 3 {
        match &rec.thumbnail {
            None => out.push(0),
            Some(t) => {
                out.push(1);
                out.extend_from_slice(&(t.len() as u32).to_le_bytes());
                out.extend_from_slice(t);
            }
        }
    }
}

/// A cursor over a record payload that reports running past its end.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| format!("payload ends early at byte {}", self.pos))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn count(&mut self, elem: usize) -> Result<usize, String> {
        let n = self.u32()? as usize;
        if n.saturating_mul(elem) > self.data.len() - self.pos {
            return Err(format!("element count {n} exceeds the payload"));
        }
        Ok(n)
    }
}

fn decode_record(data: &[u8], version: u32) -> Result<TraceRecord, String> {
    let mut c = Cursor { data, pos: 0 };
    let cam_len = u16::from_le_bytes(c.array()?) as usize;
    let camera = std::str::from_utf8(c.take(cam_len)?)
        .map_err(|_| "camera id is not UTF-8".to_string())?
        .to_owned();
    let seq = u64::from_le_bytes(c.array()?);
    let time_s = f64::from_le_bytes(c.array()?);
    let n = c.count(1)?;
    let mut outputs = Vec::with_capacity(n);
    for _ in 0..n {
        let tag = c.array::<1>()?[0];
        outputs.push(match tag {
            0 => None,
            1 => {
                let len = c.count(4)?;
                let mut v = Vec::with_capacity(len);
                for _ in 0..len {
                    v.push(f32::from_le_bytes(c.array()?));
                }
                Some(OutputValue::Vector(v))
            }
            2 => {
                let len = c.count(4)?;
                let mut v = Vec::with_capacity(len);
                for _ in 0..len {
                    v.push(c.u32()?);
                }
                Some(OutputValue::Tokens(v))
            }
            t => return Err(format!("unknown output tag {t}")),
        });
    }
    let mut views = Vec::new();
    if version >= 2 {
        let n = c.count(1)?;
        views.reserve(n);
        for _ in 0..n {
            let tag = c.array::<1>()?[0];
            views.push(match tag {
                0 => None,
                1 => {
                    let len = c.count(4)?;
                    let mut v = Vec::with_capacity(len);
                    for _ in 0..len {
                        v.push(f32::from_le_bytes(c.array()?));
                    }
                    Some(v)
                }
                t => return Err(format!("unknown view tag {t}")),
            });
        }
    }
    let nf = c.count(4)?;
    let mut frame_features = Vec::with_capacity(nf);
    for _ in 0..nf {
        frame_features.push(f32::from_le_bytes(c.array()?));
    }
    let mut thumbnail = None;
    if version >= 3 {
        match c.array::<1>()?[0] {
            0 => {}
            1 => {
                let len = c.count(1)?;
                thumbnail = Some(c.take(len)?.to_vec());
            }
            t => return Err(format!("unknown thumbnail tag {t}")),
        }
    }
    if c.pos != data.len() {
        return Err(format!(
            "{} unexpected bytes after the record",
            data.len() - c.pos
        ));
    }
    Ok(TraceRecord {
        camera,
        seq,
        time_s,
        outputs,
        views,
        frame_features,
        thumbnail,
    })
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), as used by zip and PNG.
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut c = !0u32;
    for &b in data {
        c = TABLE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::TaskKind;

    fn header() -> TraceHeader {
        TraceHeader {
            models: vec![
                TraceModel {
                    id: "cls".into(),
                    spec: OutputSpec::vector(3, TaskKind::SingleLabel),
                    memory_mb: Some(12.5),
                    latency_ms: None,
                    crops_from: None,
                    view: vec!["a".into(), "b".into()],
                },
                TraceModel {
                    id: "cap".into(),
                    spec: OutputSpec::sequence(10, 5, 0),
                    memory_mb: None,
                    latency_ms: Some(3.0),
                    crops_from: None,
                    view: vec![],
                },
            ],
            frame_feature_names: vec!["edge".into()],
            source: "unit test".into(),
            thumbnail: None,
        }
    }

    fn record(i: u64) -> TraceRecord {
        TraceRecord {
            camera: "cam0".into(),
            seq: i,
            time_s: i as f64 * 0.5,
            outputs: vec![
                Some(OutputValue::Vector(vec![0.1, 0.2 * i as f32, 0.7])),
                if i.is_multiple_of(2) {
                    None
                } else {
                    Some(OutputValue::Tokens(vec![3, 4, 0]))
                },
            ],
            views: vec![Some(vec![i as f32, 1.0]), None],
            frame_features: vec![i as f32],
            thumbnail: None,
        }
    }

    #[test]
    fn thumbnails_round_trip_are_checked_and_older_versions_read_without_them() {
        let dir = tempfile::tempdir().unwrap();
        let size = ThumbnailSize::parse("2x3").unwrap();
        assert_eq!((size.width, size.height, size.bytes()), (2, 3, 18));
        let with = TraceHeader {
            thumbnail: Some(size),
            ..header()
        };
        let p = dir.path().join("v3.trace");
        let mut w = TraceWriter::create(&p, &with).unwrap();
        let thumb = |i: u64| -> Vec<u8> { (0..18).map(|b| (b as u64 * 7 + i) as u8).collect() };
        for i in 0..3 {
            w.append(&TraceRecord {
                thumbnail: (i != 1).then(|| thumb(i)),
                ..record(i)
            })
            .unwrap();
        }
        let e = w
            .append(&TraceRecord {
                thumbnail: Some(vec![0; 17]),
                ..record(3)
            })
            .unwrap_err()
            .to_string();
        assert!(e.contains("17 bytes") && e.contains("2x3"), "{e}");
        w.finish().unwrap();
        let (h, recs) = read_all(&p).unwrap();
        assert_eq!(h.thumbnail, Some(size));
        assert_eq!(recs[0].thumbnail.as_deref(), Some(thumb(0).as_slice()));
        assert_eq!(recs[1].thumbnail, None);
        assert_eq!(recs[2].thumbnail.as_deref(), Some(thumb(2).as_slice()));

        // Without a size in the header, no record may carry one.
        let mut w = TraceWriter::create(&dir.path().join("no"), &header()).unwrap();
        let e = w
            .append(&TraceRecord {
                thumbnail: Some(thumb(0)),
                ..record(0)
            })
            .unwrap_err()
            .to_string();
        assert!(e.contains("no thumbnail size"), "{e}");

        // A version 2 trace reads as before, without thumbnails; it cannot be given any.
        let q = dir.path().join("v2.trace");
        assert!(TraceWriter::create_version(&q, &with, 2).is_err());
        let mut w = TraceWriter::create_version(&q, &header(), 2).unwrap();
        for i in 0..3 {
            w.append(&record(i)).unwrap();
        }
        w.finish().unwrap();
        let reader = TraceReader::open(&q).unwrap();
        assert_eq!(reader.version(), 2);
        let recs: Vec<TraceRecord> = reader.collect::<Result<_, _>>().unwrap();
        assert_eq!(recs, (0..3).map(record).collect::<Vec<_>>());

        for bad in ["32", "0x4", "4x", "600x10", "ax3"] {
            assert!(ThumbnailSize::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn version_1_traces_read_without_views_and_views_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v1.trace");
        let mut w = TraceWriter::create_version(&p, &header(), 1).unwrap();
        for i in 0..3 {
            w.append(&record(i)).unwrap();
        }
        w.finish().unwrap();
        let reader = TraceReader::open(&p).unwrap();
        assert_eq!(reader.version(), 1);
        let recs: Vec<TraceRecord> = reader.collect::<Result<_, _>>().unwrap();
        let expected: Vec<TraceRecord> = (0..3)
            .map(|i| TraceRecord {
                views: vec![],
                ..record(i)
            })
            .collect();
        assert_eq!(recs, expected);
        // A v1 recording is not continued by a v2 writer.
        let q = dir.path().join("cut.trace");
        let mut w = TraceWriter::create_version(&q, &header(), 1).unwrap();
        w.append(&record(0)).unwrap();
        w.flush().unwrap();
        drop(w);
        let e = TraceWriter::resume(&q).err().unwrap().to_string();
        assert!(e.contains("version 1"), "{e}");

        let mut w = TraceWriter::create(&dir.path().join("v2"), &header()).unwrap();
        let mut r = record(0);
        r.views[0] = Some(vec![1.0]);
        let e = w.append(&r).unwrap_err().to_string();
        assert!(e.contains("view of 1 values"), "{e}");
        let mut r = record(0);
        r.views.pop();
        assert!(w.append(&r).is_err());
        let mut r = record(0);
        r.views.clear();
        w.append(&r).unwrap();
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn round_trip_and_partial_file_until_finish() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.trace");
        let mut w = TraceWriter::create(&p, &header()).unwrap();
        for i in 0..10 {
            w.append(&record(i)).unwrap();
        }
        w.flush().unwrap();
        assert!(!p.exists(), "the final name appears only on finish");
        assert!(partial_path(&p).exists());
        w.finish().unwrap();
        assert!(!partial_path(&p).exists());
        let (h, recs) = read_all(&p).unwrap();
        assert_eq!(h, header());
        assert_eq!(recs, (0..10).map(record).collect::<Vec<_>>());
    }

    #[test]
    fn wrong_shapes_are_refused_on_write() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = TraceWriter::create(&dir.path().join("t"), &header()).unwrap();
        let mut r = record(0);
        r.outputs[0] = Some(OutputValue::Vector(vec![1.0]));
        let e = w.append(&r).unwrap_err().to_string();
        assert!(e.contains("cls") && e.contains("length 3"), "{e}");
        let mut r = record(0);
        r.outputs.pop();
        assert!(w.append(&r).is_err());
        let mut r = record(0);
        r.frame_features.clear();
        assert!(w.append(&r).is_err());
    }

    #[test]
    fn truncated_file_reads_up_to_last_record_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.trace");
        let mut w = TraceWriter::create(&p, &header()).unwrap();
        for i in 0..5 {
            w.append(&record(i)).unwrap();
        }
        w.flush().unwrap();
        drop(w);
        let part = partial_path(&p);
        // Cut the last record in half, as a crash during a write would.
        let bytes = std::fs::read(&part).unwrap();
        std::fs::write(&part, &bytes[..bytes.len() - 7]).unwrap();

        let strict: Vec<_> = TraceReader::open(&part).unwrap().collect();
        assert_eq!(strict.len(), 5);
        assert!(matches!(
            strict[4],
            Err(TraceError::Truncated { records: 4, .. })
        ));
        let lenient: Vec<_> = TraceReader::open_partial(&part)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(lenient, (0..4).map(record).collect::<Vec<_>>());

        let mut w = TraceWriter::resume(&p).unwrap();
        assert_eq!(w.records(), 4);
        for i in 4..8 {
            w.append(&record(i)).unwrap();
        }
        w.finish().unwrap();
        let (_, recs) = read_all(&p).unwrap();
        assert_eq!(recs, (0..8).map(record).collect::<Vec<_>>());
    }

    #[test]
    fn foreign_newer_and_corrupt_files_give_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.trace");
        let mut w = TraceWriter::create(&p, &header()).unwrap();
        for i in 0..3 {
            w.append(&record(i)).unwrap();
        }
        w.finish().unwrap();
        let good = std::fs::read(&p).unwrap();

        let foreign = dir.path().join("foreign");
        std::fs::write(&foreign, b"{\"models\": []}\n").unwrap();
        assert!(matches!(
            TraceReader::open(&foreign),
            Err(TraceError::NotATrace { .. })
        ));

        let mut newer = good.clone();
        newer[8..12].copy_from_slice(&(TRACE_VERSION + 1).to_le_bytes());
        std::fs::write(&foreign, &newer).unwrap();
        let e = TraceReader::open(&foreign).err().unwrap();
        assert!(
            matches!(e, TraceError::NewerVersion { found: 4, .. }),
            "{e}"
        );

        let mut flipped = good.clone();
        let last_record_byte = good.len() - 16 - 6;
        flipped[last_record_byte] ^= 0x55;
        std::fs::write(&foreign, &flipped).unwrap();
        let e = read_all(&foreign).unwrap_err();
        assert!(matches!(e, TraceError::Corrupt { record: 2, .. }), "{e}");

        std::fs::write(&foreign, &good[..good.len() - 10]).unwrap();
        let e = read_all(&foreign).unwrap_err().to_string();
        assert!(e.contains("without its end mark"), "{e}");
    }
}
