//! Network faults during a run: RTSP servers killed and restarted at seeded random moments
//! while several cameras stream (every camera resumes, every reconnection counted), and the
//! MQTT broker killed with SIGKILL while records are published (the buffered records arrive
//! after it restarts, the rest are counted as dropped).
//!
//! `MLINK_FAULT_SECONDS` lengthens the RTSP run (default 30 s; the soak uses minutes).

mod ingest_support;
mod tools_support;

use ingest_support::*;
use mlink::engine::record::{OutputRecord, Provenance, RECORD_VERSION};
use mlink::engine::sink::{MqttSink, Sink};
use mlink::ingest::{
    IngestManager, RetryPolicy, RtspServerHandle, RtspServerOptions, ServeSource, SourceOptions,
    SourceState, start_rtsp_server,
};
use mlink::metrics::Metrics;
use mlink::output::OutputValue;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// SplitMix64: the fault schedule is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

fn quick_recovery() -> SourceOptions {
    SourceOptions {
        retry: RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
            max_retries: None,
            ..RetryPolicy::default()
        },
        stall_timeout_min: Duration::from_secs(2),
        startup_timeout: Duration::from_secs(15),
        offline: false,
    }
}

fn serve(port: u16) -> RtspServerHandle {
    start_rtsp_server(
        ServeSource::Test("ball".into()),
        RtspServerOptions {
            port,
            mount: "/cam".into(),
            test_width: 160,
            test_height: 120,
            test_fps: 10,
            ..RtspServerOptions::default()
        },
    )
    .expect("the RTSP server starts")
}

struct Camera {
    id: String,
    port: u16,
    server: Option<RtspServerHandle>,
    /// When a stopped server comes back.
    restart_at: Option<Instant>,
    kills: u64,
    rx: crossbeam_channel::Receiver<mlink::frame::Frame>,
    last_seq: u64,
}

impl Camera {
    fn drain(&mut self) {
        while let Ok(f) = self.rx.try_recv() {
            self.last_seq = self.last_seq.max(f.seq);
        }
    }
}

#[test]
fn rtsp_servers_killed_at_random_every_camera_resumes_and_reconnects_are_counted() {
    let seconds: u64 = std::env::var("MLINK_FAULT_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let metrics = Arc::new(Metrics::new());
    let ingest = IngestManager::with_options(metrics.clone(), quick_recovery()).unwrap();
    let mut cams: Vec<Camera> = (0..3)
        .map(|i| {
            let port = free_port();
            let server = serve(port);
            let id = format!("cam{i}");
            let rx = ingest
                .add_camera(&camera(&id, server.url()), Path::new("/"))
                .unwrap();
            Camera {
                id,
                port,
                server: Some(server),
                restart_at: None,
                kills: 0,
                rx,
                last_seq: 0,
            }
        })
        .collect();
    let running = |ingest: &IngestManager, id: &str| {
        ingest
            .wait_for(id, Duration::from_secs(30), |s| {
                s.state == SourceState::Running
            })
            .unwrap_or_else(|s| panic!("{id} is not running: {s:?}"))
    };
    for c in &cams {
        running(&ingest, &c.id);
    }

    let mut rng = Rng(0x5eed);
    let end = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < end {
        std::thread::sleep(rng.millis(100, 1200));
        for c in cams.iter_mut() {
            c.drain();
            if c.restart_at.is_some_and(|t| Instant::now() >= t) {
                c.server = Some(serve(c.port));
                c.restart_at = None;
            }
        }
        // Kill a random camera's server once its camera has come back from the previous kill
        // (a camera still shown running may not have noticed that kill yet), so that every
        // kill is one loss and one reconnection.
        let c = &mut cams[(rng.next() % 3) as usize];
        if c.server.is_some() {
            let kills = c.kills;
            ingest
                .wait_for(&c.id, Duration::from_secs(30), |s| {
                    s.state == SourceState::Running && s.reconnects == kills
                })
                .unwrap_or_else(|s| panic!("{} did not come back: {s:?}", c.id));
            c.drain();
            c.server.take().expect("checked").stop();
            c.kills += 1;
            c.restart_at = Some(Instant::now() + rng.millis(200, 2500));
        }
    }
    // Everything back up: every camera runs again and delivers new frames.
    for c in cams.iter_mut() {
        if c.server.is_none() {
            c.server = Some(serve(c.port));
        }
    }
    let mut total_kills = 0;
    for c in cams.iter_mut() {
        let kills = c.kills;
        let status = ingest
            .wait_for(&c.id, Duration::from_secs(30), |s| {
                s.state == SourceState::Running && s.reconnects >= kills
            })
            .unwrap_or_else(|s| panic!("{} did not come back: {s:?}", c.id));
        c.drain();
        let before = c.last_seq;
        let fresh = next_frame(&c.rx, Duration::from_secs(30));
        let mut newest = fresh.seq;
        while newest <= before {
            newest = next_frame(&c.rx, Duration::from_secs(30)).seq;
        }
        assert_eq!(
            status.reconnects, c.kills,
            "{}: {} kills but {} reconnections",
            c.id, c.kills, status.reconnects
        );
        assert_eq!(
            metrics.source_reconnects.with_label_values(&[&c.id]).get(),
            c.kills,
            "{}: mlink_source_reconnects_total",
            c.id
        );
        total_kills += c.kills;
    }
    assert!(
        total_kills >= 6,
        "only {total_kills} kills: the run is too short to test anything"
    );
    for c in cams.iter_mut() {
        if let Some(s) = c.server.take() {
            s.stop();
        }
    }
}

fn record(seq: u64) -> OutputRecord {
    OutputRecord {
        v: RECORD_VERSION,
        camera: "lobby".into(),
        seq,
        pts_s: None,
        time: 0.0,
        model: "centernet".into(),
        provenance: Provenance::Exact { profiling: false },
        value: Some(OutputValue::Vector(vec![seq as f32])),
    }
}

/// A subscriber with a persistent session (a fixed client id, no clean session).
fn subscribe(port: u16, topic: &str) -> (rumqttc::Client, rumqttc::Connection) {
    let mut opts = rumqttc::MqttOptions::new("fault-subscriber", "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(5));
    opts.set_clean_session(false);
    let (client, conn) = rumqttc::Client::new(opts, 100);
    client
        .subscribe(topic, rumqttc::QoS::AtLeastOnce)
        .expect("subscribe request queued");
    (client, conn)
}

/// Record sequence numbers from the subscription until `want` distinct ones arrived or
/// `limit` passed.
fn collect(
    conn: &mut rumqttc::Connection,
    want: usize,
    limit: Duration,
) -> std::collections::BTreeSet<u64> {
    let mut got = std::collections::BTreeSet::new();
    let deadline = Instant::now() + limit;
    while got.len() < want && Instant::now() < deadline {
        if let Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)))) =
            conn.recv_timeout(Duration::from_millis(200))
        {
            let r: OutputRecord = serde_json::from_slice(&p.payload).expect("a record");
            got.insert(r.seq);
        }
    }
    got
}

fn wait_suback(conn: &mut rumqttc::Connection) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)))) =
            conn.recv_timeout(Duration::from_millis(200))
        {
            return;
        }
    }
    panic!("no SUBACK from the broker");
}

/// The broker, SIGKILLed when stopped or when the test fails half-way.
struct Reap(std::process::Child);

impl Reap {
    fn stop(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const BROKER_CONF: &str = "max_queued_messages 10000\n";

#[test]
fn mqtt_broker_killed_buffered_records_arrive_and_the_rest_are_counted_dropped() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = tools_support::start_mosquitto_with(port, dir.path(), BROKER_CONF).map(Reap)
    else {
        return; // mosquitto missing outside CI (said so loudly)
    };
    const BUFFER: usize = 20;
    let dropped = prometheus::IntCounter::new("d", "d").unwrap();
    let mut sink = MqttSink::connect("127.0.0.1", port, "mlink", BUFFER, dropped.clone());

    let (sub, mut conn) = subscribe(port, "mlink/lobby");
    wait_suback(&mut conn);
    sink.write(&(0..5).map(record).collect::<Vec<_>>()).unwrap();
    let live = collect(&mut conn, 5, Duration::from_secs(20));
    assert_eq!(live, (0..5).collect(), "records before the fault");
    drop(sub);
    drop(conn);
    // Have the broker save its state after the disconnect (SIGUSR1), so that the subscriber's
    // session, and the messages queued for it while it is away, survive the SIGKILL whoever
    // reconnects first after the restart.
    let db = dir.path().join("mosquitto.db");
    std::thread::sleep(Duration::from_millis(300));
    let disconnected = std::time::SystemTime::now();
    std::thread::sleep(Duration::from_millis(50));
    std::process::Command::new("kill")
        .args(["-USR1", &broker.0.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::metadata(&db)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t > disconnected)
    {
        assert!(Instant::now() < deadline, "mosquitto never saved its state");
        std::thread::sleep(Duration::from_millis(100));
    }

    // SIGKILL: no clean shutdown. Records written meanwhile fill the sink's buffer; the rest
    // are dropped and counted.
    broker.stop();
    std::thread::sleep(Duration::from_millis(1500)); // the sink notices the loss
    let during: Vec<_> = (100..100 + 3 * BUFFER as u64).map(record).collect();
    sink.write(&during).unwrap();
    let counted = dropped.get();
    assert!(
        counted > 0,
        "a buffer of {BUFFER} cannot hold {}",
        during.len()
    );

    let broker = Reap(
        tools_support::start_mosquitto_with(port, dir.path(), BROKER_CONF)
            .expect("the broker restarts"),
    );
    let (_sub, mut conn) = subscribe(port, "mlink/lobby");
    let want = during.len() - counted as usize;
    let got = collect(&mut conn, want, Duration::from_secs(30));
    broker.stop();
    let expected: std::collections::BTreeSet<u64> = (100..100 + want as u64).collect();
    assert_eq!(
        got, expected,
        "the oldest {want} records were buffered and delivered; {counted} counted dropped; got {got:?}"
    );
    assert_eq!(got.len() as u64 + counted, during.len() as u64);
}
