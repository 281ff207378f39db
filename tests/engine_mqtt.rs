//! The MQTT sink against a real broker (Debian's mosquitto): records arrive on a topic per
//! camera, and records published while the broker is down are buffered and delivered after it
//! comes back.

mod tools_support;

use mlink::engine::record::{OutputRecord, Provenance, RECORD_VERSION};
use mlink::engine::sink::{MqttSink, Sink};
use mlink::output::OutputValue;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts mosquitto on `port` with persistence in `dir` (see [`tools_support::start_mosquitto`]).
fn start_broker(port: u16, dir: &std::path::Path) -> Option<Child> {
    tools_support::start_mosquitto(port, dir)
}

fn record(camera: &str, seq: u64) -> OutputRecord {
    OutputRecord {
        v: RECORD_VERSION,
        camera: camera.into(),
        seq,
        pts_s: None,
        time: 0.0,
        model: "centernet".into(),
        provenance: Provenance::Exact { profiling: false },
        value: Some(OutputValue::Vector(vec![seq as f32])),
    }
}

/// Subscribes to `topic` and collects payload sequence numbers until `want` arrived or time ran out.
/// The subscriber keeps a persistent session (clean_session = false) under a fixed client id.
fn collect(port: u16, topic: &str, want: usize, ready: std::sync::mpsc::Sender<()>) -> Vec<u64> {
    let mut opts =
        rumqttc::MqttOptions::new(format!("sub-{}", std::process::id()), "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(5));
    opts.set_clean_session(false);
    let (client, mut conn) = rumqttc::Client::new(opts, 100);
    client.subscribe(topic, rumqttc::QoS::AtLeastOnce).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut ready = Some(ready);
    while got.len() < want && Instant::now() < deadline {
        match conn.recv_timeout(Duration::from_millis(200)) {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)))) => {
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
            }
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)))) => {
                let r: OutputRecord = serde_json::from_slice(&p.payload).unwrap();
                got.push(r.seq);
            }
            _ => {}
        }
    }
    got
}

#[test]
fn mqtt_sink_publishes_per_camera_and_recovers_after_broker_restart() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    // None only when mosquitto is missing outside CI (require_tool said so).
    let Some(mut broker) = start_broker(port, dir.path()) else {
        return;
    };
    let dropped = prometheus::IntCounter::new("d", "d").unwrap();
    let mut sink = MqttSink::connect("127.0.0.1", port, "mlink", 1000, dropped.clone());

    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let sub = std::thread::spawn(move || collect(port, "mlink/lobby", 3, ready_tx));
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    sink.write(&[
        record("lobby", 0),
        record("garage", 100),
        record("lobby", 1),
        record("lobby", 2),
    ])
    .unwrap();
    let mut got = sub.join().unwrap();
    got.sort();
    assert_eq!(
        got,
        vec![0, 1, 2],
        "only the lobby camera's records on its topic"
    );

    // Broker down (SIGTERM, so it saves the subscriber's session): records are buffered, not lost.
    Command::new("kill")
        .args(["-TERM", &broker.id().to_string()])
        .status()
        .unwrap();
    broker.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    sink.write(&[record("lobby", 10), record("lobby", 11)])
        .unwrap();
    assert_eq!(dropped.get(), 0);

    let mut broker = start_broker(port, dir.path()).expect("broker restarts");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let sub = std::thread::spawn(move || collect(port, "mlink/lobby", 2, ready_tx));
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let got = sub.join().unwrap();
    broker.kill().unwrap();
    let _ = broker.wait();
    assert!(
        got.contains(&10) && got.contains(&11),
        "buffered records delivered after reconnect: {got:?}"
    );
}

#[test]
fn mqtt_sink_counts_drops_when_its_buffer_is_full() {
    // No broker at all: the request queue fills and further records are dropped and counted.
    let port = free_port();
    let dropped = prometheus::IntCounter::new("d", "d").unwrap();
    let mut sink = MqttSink::connect("127.0.0.1", port, "mlink", 5, dropped.clone());
    let batch: Vec<_> = (0..50).map(|i| record("lobby", i)).collect();
    sink.write(&batch).unwrap();
    assert!(dropped.get() >= 40, "dropped {}", dropped.get());
}
