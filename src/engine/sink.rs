//! Output sinks: JSON lines to a rotated file or to standard output, and MQTT with a topic per
//! camera. Every sink counts what it writes and what it drops, and none blocks the frame path:
//! records reach a sink through [`SinkSet`], which runs each sink on its own thread behind a
//! bounded queue.

use super::record::OutputRecord;
use crate::config::SinkConfig;
use crate::metrics::Metrics;
use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use prometheus::IntCounter;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How many rotated files a JSON-lines sink keeps (`out.jsonl.1` .. `out.jsonl.N`).
const ROTATED_FILES_KEPT: usize = 5;
/// Records queued between the engine and a sink thread.
const SINK_QUEUE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot open sink file {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write sink file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot serialise a record: {0}")]
    Encode(#[from] serde_json::Error),
}

/// A destination for records. `write` may buffer; `flush` makes everything written durable.
pub trait Sink: Send {
    fn name(&self) -> String;
    fn write(&mut self, batch: &[OutputRecord]) -> Result<(), SinkError>;
    fn flush(&mut self) -> Result<(), SinkError>;
}

/// JSON lines to a file, rotated when it grows past a size.
///
/// Each batch is written with one `write_all` of whole lines. When a write fails (disk full,
/// I/O error) the file is cut back to its last whole line, so a failed batch leaves nothing
/// behind (the sink set counts it as dropped) and later batches never follow a torn line.
/// Earlier rotated files are never written to.
pub struct JsonlSink {
    path: PathBuf,
    file: File,
    /// Bytes of whole lines in the current file.
    written_bytes: u64,
    rotate_bytes: u64,
    /// Lines of the batch being written, not yet on disk.
    pending: Vec<u8>,
}

impl JsonlSink {
    pub fn open(path: &Path, rotate_mb: f64) -> Result<Self, SinkError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| SinkError::Open {
                path: path.into(),
                source,
            })?;
        }
        let file = Self::open_file(path)?;
        let written_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Self {
            path: path.into(),
            file,
            written_bytes,
            rotate_bytes: (rotate_mb * 1024.0 * 1024.0).max(1.0) as u64,
            pending: Vec::new(),
        })
    }

    fn open_file(path: &Path) -> Result<File, SinkError> {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| SinkError::Open {
                path: path.into(),
                source,
            })
    }

    fn rotated(&self, i: usize) -> PathBuf {
        let mut s = self.path.as_os_str().to_owned();
        s.push(format!(".{i}"));
        PathBuf::from(s)
    }

    /// Writes the pending lines; on failure cuts the file back to its last whole line and
    /// forgets them.
    fn commit(&mut self) -> Result<(), SinkError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let result = self.file.write_all(&self.pending);
        let len = self.pending.len() as u64;
        self.pending.clear();
        match result {
            Ok(()) => {
                self.written_bytes += len;
                Ok(())
            }
            Err(source) => {
                // Cutting back needs no space; if even that fails, the next batch still
                // starts on a new line rather than after a torn one.
                if self.file.set_len(self.written_bytes).is_err() {
                    let _ = self.file.write_all(b"\n");
                    self.written_bytes = self.file.metadata().map_or(0, |m| m.len());
                }
                Err(SinkError::Write {
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }

    /// Shifts `out.jsonl.(i)` to `.(i+1)`, the current file to `.1`, and starts a new file.
    fn rotate(&mut self) -> Result<(), SinkError> {
        self.commit()?;
        for i in (1..ROTATED_FILES_KEPT).rev() {
            let from = self.rotated(i);
            if from.exists() {
                std::fs::rename(&from, self.rotated(i + 1))
                    .map_err(|source| SinkError::Write { path: from, source })?;
            }
        }
        std::fs::rename(&self.path, self.rotated(1)).map_err(|source| SinkError::Write {
            path: self.path.clone(),
            source,
        })?;
        self.file = Self::open_file(&self.path)?;
        self.written_bytes = 0;
        Ok(())
    }
}

impl Sink for JsonlSink {
    fn name(&self) -> String {
        format!("jsonl:{}", self.path.display())
    }

    fn write(&mut self, batch: &[OutputRecord]) -> Result<(), SinkError> {
        self.pending.clear();
        for r in batch {
            let mut line = serde_json::to_vec(r)?;
            line.push(b'\n');
            let size = self.written_bytes + self.pending.len() as u64;
            if size > 0 && size + line.len() as u64 > self.rotate_bytes {
                self.rotate()?;
            }
            self.pending.extend_from_slice(&line);
        }
        self.commit()
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        // Batches are written whole as they come; nothing is buffered between them.
        self.commit()
    }
}

/// JSON lines to standard output.
pub struct StdoutSink;

impl Sink for StdoutSink {
    fn name(&self) -> String {
        "stdout".into()
    }

    fn write(&mut self, batch: &[OutputRecord]) -> Result<(), SinkError> {
        let mut out = std::io::stdout().lock();
        for r in batch {
            let line = serde_json::to_string(r)?;
            // A closed stdout (a pipe whose reader left) is not worth stopping the engine for.
            let _ = writeln!(out, "{line}");
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        let _ = std::io::stdout().flush();
        Ok(())
    }
}

/// MQTT: each record is published (QoS 1) on `<prefix>/<camera>`. While the broker is
/// unreachable, records wait in the client's bounded request queue and the event loop keeps
/// reconnecting; when that queue is full, new records are dropped and counted.
pub struct MqttSink {
    name: String,
    client: rumqttc::Client,
    topic_prefix: String,
    dropped: IntCounter,
    _event_loop: JoinHandle<()>,
}

impl MqttSink {
    pub fn connect(
        host: &str,
        port: u16,
        topic_prefix: &str,
        buffer: usize,
        dropped: IntCounter,
    ) -> Self {
        let client_id = format!("mlink-{}", std::process::id());
        let mut opts = rumqttc::MqttOptions::new(client_id, host, port);
        opts.set_keep_alive(Duration::from_secs(10));
        let (client, mut connection) = rumqttc::Client::new(opts, buffer.max(1));
        let name = format!("mqtt:{host}:{port}");
        let log_name = name.clone();
        let event_loop = std::thread::spawn(move || {
            let mut connected = false;
            for event in connection.iter() {
                match event {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                        if !connected {
                            tracing::info!(sink = %log_name, "connected to the MQTT broker");
                        }
                        connected = true;
                    }
                    Ok(_) => {}
                    Err(rumqttc::ConnectionError::RequestsDone) => break,
                    Err(e) => {
                        if connected {
                            tracing::warn!(sink = %log_name, error = %e, "MQTT broker connection lost; retrying");
                        }
                        connected = false;
                        // The next iteration reconnects; pace the attempts.
                        std::thread::sleep(Duration::from_millis(500));
                    }
                }
            }
        });
        Self {
            name,
            client,
            topic_prefix: topic_prefix.trim_end_matches('/').to_string(),
            dropped,
            _event_loop: event_loop,
        }
    }
}

impl Sink for MqttSink {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn write(&mut self, batch: &[OutputRecord]) -> Result<(), SinkError> {
        for r in batch {
            let payload = serde_json::to_vec(r)?;
            let topic = format!("{}/{}", self.topic_prefix, r.camera);
            if self
                .client
                .try_publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
                .is_err()
            {
                self.dropped.inc();
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

impl Drop for MqttSink {
    fn drop(&mut self) {
        // Never block on a full request queue when the broker is gone.
        let _ = self.client.try_disconnect();
    }
}

/// Keeps records in memory (benchmarks and tests compare runs record by record).
pub struct MemorySink(pub Arc<std::sync::Mutex<Vec<OutputRecord>>>);

impl Sink for MemorySink {
    fn name(&self) -> String {
        "memory".into()
    }

    fn write(&mut self, batch: &[OutputRecord]) -> Result<(), SinkError> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(batch);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Builds a sink from its configuration; relative paths are resolved against `base_dir`.
pub fn build(
    cfg: &SinkConfig,
    base_dir: &Path,
    metrics: &Metrics,
) -> Result<Box<dyn Sink>, SinkError> {
    Ok(match cfg {
        SinkConfig::Jsonl { path, rotate_mb } => {
            let p = if path.is_absolute() {
                path.clone()
            } else {
                base_dir.join(path)
            };
            Box::new(JsonlSink::open(&p, *rotate_mb)?)
        }
        SinkConfig::Stdout => Box::new(StdoutSink),
        SinkConfig::Mqtt {
            host,
            port,
            topic_prefix,
            buffer,
        } => {
            let name = format!("mqtt:{host}:{port}");
            Box::new(MqttSink::connect(
                host,
                *port,
                topic_prefix,
                *buffer,
                metrics.sink_dropped.with_label_values(&[&name]),
            ))
        }
    })
}

enum SinkMsg {
    Batch(Vec<OutputRecord>),
    Flush(Sender<()>),
}

struct SinkWorker {
    name: String,
    tx: Sender<SinkMsg>,
    dropped: IntCounter,
    thread: Option<JoinHandle<()>>,
}

/// The engine's sinks, each on its own thread behind a bounded queue. A slow or failing sink
/// drops (and counts) batches rather than stalling the frame path.
pub struct SinkSet {
    workers: Vec<SinkWorker>,
}

impl SinkSet {
    pub fn new(sinks: Vec<Box<dyn Sink>>, metrics: Arc<Metrics>) -> Self {
        let workers = sinks
            .into_iter()
            .map(|mut sink| {
                let name = sink.name();
                let (tx, rx): (Sender<SinkMsg>, Receiver<SinkMsg>) = bounded(SINK_QUEUE);
                let written = metrics.sink_records.with_label_values(&[&name]);
                let dropped = metrics.sink_dropped.with_label_values(&[&name]);
                let thread_dropped = dropped.clone();
                let thread_name = name.clone();
                let thread = std::thread::Builder::new()
                    .name(format!("sink {name}"))
                    .spawn(move || {
                        for msg in rx {
                            match msg {
                                SinkMsg::Batch(batch) => match sink.write(&batch) {
                                    Ok(()) => written.inc_by(batch.len() as u64),
                                    Err(e) => {
                                        thread_dropped.inc_by(batch.len() as u64);
                                        tracing::warn!(sink = %thread_name, error = %e, "sink write failed");
                                    }
                                },
                                SinkMsg::Flush(done) => {
                                    if let Err(e) = sink.flush() {
                                        tracing::warn!(sink = %thread_name, error = %e, "sink flush failed");
                                    }
                                    let _ = done.send(());
                                }
                            }
                        }
                        let _ = sink.flush();
                    })
                    .ok();
                SinkWorker { name, tx, dropped, thread }
            })
            .collect();
        Self { workers }
    }

    /// Hands a frame's records to every sink without blocking.
    pub fn send(&self, batch: Vec<OutputRecord>) {
        for w in &self.workers {
            if let Err(
                TrySendError::Full(SinkMsg::Batch(b))
                | TrySendError::Disconnected(SinkMsg::Batch(b)),
            ) = w.tx.try_send(SinkMsg::Batch(batch.clone()))
            {
                w.dropped.inc_by(b.len() as u64);
                tracing::warn!(sink = %w.name, "sink queue full; records dropped");
            }
        }
    }

    /// Waits until every sink has written and flushed what it was sent.
    pub fn flush(&self) {
        for w in &self.workers {
            let (done_tx, done_rx) = bounded(1);
            if w.tx.send(SinkMsg::Flush(done_tx)).is_ok() {
                let _ = done_rx.recv_timeout(Duration::from_secs(10));
            }
        }
    }
}

impl Drop for SinkSet {
    fn drop(&mut self) {
        for w in &mut self.workers {
            let (tx, _) = bounded(0);
            // Closing the queue ends the thread after it drains and flushes.
            let _ = std::mem::replace(&mut w.tx, tx);
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::record::{Provenance, RECORD_VERSION};
    use crate::output::OutputValue;

    fn record(seq: u64) -> OutputRecord {
        OutputRecord {
            v: RECORD_VERSION,
            camera: "cam".into(),
            seq,
            pts_s: None,
            time: 0.0,
            model: "m".into(),
            provenance: Provenance::Exact { profiling: false },
            value: Some(OutputValue::Vector(vec![seq as f32])),
        }
    }

    #[test]
    fn jsonl_sink_rotates_by_size_and_keeps_every_line_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut sink = JsonlSink::open(&path, 0.001).unwrap(); // ~1 KB per file
        let batch: Vec<_> = (0..40).map(record).collect();
        sink.write(&batch).unwrap();
        sink.flush().unwrap();
        assert!(
            dir.path().join("out.jsonl.1").exists(),
            "no rotation happened"
        );
        let mut seqs = Vec::new();
        for name in [
            "out.jsonl.5",
            "out.jsonl.4",
            "out.jsonl.3",
            "out.jsonl.2",
            "out.jsonl.1",
            "out.jsonl",
        ] {
            let p = dir.path().join(name);
            if let Ok(text) = std::fs::read_to_string(&p) {
                assert!(text.len() <= 1100, "{name} is {} bytes", text.len());
                for line in text.lines() {
                    let r: OutputRecord = serde_json::from_str(line).unwrap();
                    seqs.push(r.seq);
                }
            }
        }
        // The newest records survive in order; the oldest were rotated out past the kept files.
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
        assert_eq!(*seqs.last().unwrap(), 39);
    }

    #[test]
    fn sink_set_counts_written_records_and_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.jsonl");
        let metrics = Arc::new(Metrics::new());
        let sinks = SinkSet::new(
            vec![Box::new(JsonlSink::open(&path, 64.0).unwrap())],
            metrics.clone(),
        );
        sinks.send((0..3).map(record).collect());
        sinks.send((3..5).map(record).collect());
        sinks.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 5);
        let name = format!("jsonl:{}", path.display());
        assert_eq!(metrics.sink_records.with_label_values(&[&name]).get(), 5);
    }
}
