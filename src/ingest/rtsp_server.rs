//! A small RTSP server (gstreamer-rtsp-server) that restreams a file in a loop or a test
//! pattern, as H.264 over RTP. `mlink serve-rtsp` runs it; tests start and stop it in-process.
//!
//! A file is decoded by a separate *feeder* pipeline that seeks back to the start at its end
//! and pushes raw frames into the served media's `appsrc`, which timestamps them on arrival.
//! Looping inside the served pipeline itself would reset its running time and break the RTP
//! timestamps clients rely on; the feeder keeps the served stream continuous.

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_rtsp_server as rtsp;
use gstreamer_rtsp_server::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::IngestError;
use super::source::check_test_pattern;

/// What the server streams.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServeSource {
    /// A video file, served in a loop.
    File(PathBuf),
    /// A `videotestsrc` pattern.
    Test(String),
}

impl ServeSource {
    /// `test:PATTERN` or a file path.
    pub fn parse(arg: &str) -> Result<Self, IngestError> {
        if let Some(p) = arg.strip_prefix("test:") {
            check_test_pattern(p)?;
            return Ok(Self::Test(p.to_string()));
        }
        let path = Path::new(arg);
        if !path.is_file() {
            return Err(IngestError::RtspServer(format!(
                "{arg} is not a readable file (use a video file or test:PATTERN)"
            )));
        }
        let path = std::path::absolute(path)
            .map_err(|e| IngestError::RtspServer(format!("cannot resolve {arg}: {e}")))?;
        Ok(Self::File(path))
    }
}

/// Where and how the server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtspServerOptions {
    /// Address to bind; loopback unless the stream is meant for other machines.
    pub bind: String,
    /// TCP port; 0 picks a free one.
    pub port: u16,
    /// Mount path of the stream, starting with `/`.
    pub mount: String,
    /// Size and rate of test patterns.
    pub test_width: u32,
    pub test_height: u32,
    pub test_fps: u32,
}

impl Default for RtspServerOptions {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1".into(),
            port: 8554,
            mount: "/stream".into(),
            test_width: 640,
            test_height: 480,
            test_fps: 15,
        }
    }
}

/// A running server; dropping it (or [`stop`](Self::stop)) disconnects every client and
/// closes the port.
pub struct RtspServerHandle {
    url: String,
    port: u16,
    main_loop: glib::MainLoop,
    thread: Option<JoinHandle<()>>,
}

impl RtspServerHandle {
    /// `rtsp://BIND:PORT/MOUNT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Disconnects all clients, closes the port and waits for the server thread.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    /// Blocks until the server stops (for the command line: until the process is killed).
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn stop_inner(&mut self) {
        self.main_loop.quit();
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("RTSP server thread panicked");
        }
    }
}

impl Drop for RtspServerHandle {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// The encoder and payloader shared by both kinds of source. Short GOPs let a client that
/// joins (or rejoins) the shared stream start decoding quickly.
const ENCODE: &str = "videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 \
     ! video/x-h264,profile=constrained-baseline ! rtph264pay name=pay0 pt=96 config-interval=-1";

fn launch_line(source: &ServeSource, opts: &RtspServerOptions) -> String {
    match source {
        ServeSource::Test(pattern) => format!(
            "( videotestsrc is-live=true pattern={pattern} ! video/x-raw,width={},height={},framerate={}/1 ! {ENCODE} )",
            opts.test_width,
            opts.test_height,
            opts.test_fps.max(1)
        ),
        ServeSource::File(_) => format!(
            "( appsrc name=feed is-live=true format=time do-timestamp=true max-buffers=4 leaky-type=downstream ! {ENCODE} )"
        ),
    }
}

/// A feeder pipeline decoding a file in a loop into a media's appsrc.
struct Feeder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Feeder {
    fn start(path: &Path, appsrc: gst_app::AppSrc) -> Result<Self, IngestError> {
        let uri = glib::filename_to_uri(path, None)
            .map_err(|e| IngestError::RtspServer(format!("{}: {e}", path.display())))?;
        let pipeline = gst::parse::launch(&format!(
            "uridecodebin uri=\"{uri}\" ! videoconvert ! appsink name=out sync=true max-buffers=2"
        ))
        .map_err(|e| IngestError::RtspServer(format!("feeder pipeline: {e}")))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| IngestError::RtspServer("feeder is not a pipeline".into()))?;
        let sink = pipeline
            .by_name("out")
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .ok_or_else(|| IngestError::RtspServer("feeder has no appsink".into()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let push_stop = stop.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
                    if push_stop.load(Ordering::Acquire) {
                        return Err(gst::FlowError::Flushing);
                    }
                    let (Some(buffer), Some(caps)) = (sample.buffer_owned(), sample.caps()) else {
                        return Ok(gst::FlowSuccess::Ok);
                    };
                    let caps = caps.to_owned();
                    if appsrc.caps().as_ref() != Some(&caps) {
                        appsrc.set_caps(Some(&caps));
                    }
                    // The appsrc stamps frames with its own running time (do-timestamp), so
                    // timestamps keep increasing when the file starts over.
                    let mut buffer = buffer;
                    {
                        let b = buffer.make_mut();
                        b.set_pts(gst::ClockTime::NONE);
                        b.set_dts(gst::ClockTime::NONE);
                    }
                    // Before the media plays (and while it is paused) the appsrc refuses
                    // frames: a live source simply skips them. The feeder is stopped when the
                    // media is unprepared or the server stops.
                    let _ = appsrc.push_buffer(buffer);
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        let bus = pipeline
            .bus()
            .ok_or_else(|| IngestError::RtspServer("feeder has no bus".into()))?;
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| IngestError::RtspServer(format!("cannot play {}: {e}", path.display())))?;
        let thread_stop = stop.clone();
        let name = path.display().to_string();
        let thread = std::thread::Builder::new()
            .name("rtsp-feeder".into())
            .spawn(move || {
                while !thread_stop.load(Ordering::Acquire) {
                    let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(50)) else {
                        continue;
                    };
                    match msg.view() {
                        gst::MessageView::Eos(_) => {
                            tracing::debug!("{name}: end of file, starting over");
                            if let Err(e) = pipeline.seek_simple(
                                gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT,
                                gst::ClockTime::ZERO,
                            ) {
                                tracing::error!("cannot loop {name}: {e}");
                                break;
                            }
                        }
                        gst::MessageView::Error(e) => {
                            tracing::error!("decoding {name}: {}", e.error());
                            break;
                        }
                        _ => {}
                    }
                }
                thread_stop.store(true, Ordering::Release);
                let _ = pipeline.set_state(gst::State::Null);
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts an RTSP server in its own thread and main context.
pub fn start_rtsp_server(
    source: ServeSource,
    opts: RtspServerOptions,
) -> Result<RtspServerHandle, IngestError> {
    super::init()?;
    if !opts.mount.starts_with('/') {
        return Err(IngestError::RtspServer(format!(
            "mount path `{}` must start with /",
            opts.mount
        )));
    }
    let context = glib::MainContext::new();
    let main_loop = glib::MainLoop::new(Some(&context), false);
    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<Result<u16, IngestError>>(1);
    let thread_loop = main_loop.clone();
    let launch = launch_line(&source, &opts);
    let thread_opts = opts.clone();
    let thread = std::thread::Builder::new()
        .name("rtsp-server".into())
        .spawn(move || {
            let result = context.with_thread_default(|| {
                serve(
                    &context,
                    &thread_loop,
                    &source,
                    &thread_opts,
                    &launch,
                    &ready_tx,
                )
            });
            if let Err(e) = result {
                let _ = ready_tx.send(Err(IngestError::RtspServer(e.to_string())));
            }
        })?;
    let port = match ready_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(port)) => port,
        Ok(Err(e)) => {
            let _ = thread.join();
            return Err(e);
        }
        Err(_) => {
            main_loop.quit();
            return Err(IngestError::RtspServer("the server did not start".into()));
        }
    };
    Ok(RtspServerHandle {
        url: format!("rtsp://{}:{port}{}", opts.bind, opts.mount),
        port,
        main_loop,
        thread: Some(thread),
    })
}

/// Body of the server thread: sets up, reports the port, runs until quit, tears down.
fn serve(
    context: &glib::MainContext,
    main_loop: &glib::MainLoop,
    source: &ServeSource,
    opts: &RtspServerOptions,
    launch: &str,
    ready: &crossbeam_channel::Sender<Result<u16, IngestError>>,
) {
    let server = rtsp::RTSPServer::new();
    server.set_address(&opts.bind);
    server.set_service(&opts.port.to_string());
    let factory = rtsp::RTSPMediaFactory::new();
    factory.set_launch(launch);
    factory.set_shared(true);
    let feeders: Arc<Mutex<Vec<Feeder>>> = Arc::default();
    if let ServeSource::File(path) = source {
        let path = path.clone();
        let feeders = feeders.clone();
        factory.connect_media_configure(move |_, media| {
            let appsrc = media
                .element()
                .downcast::<gst::Bin>()
                .ok()
                .and_then(|bin| bin.by_name_recurse_up("feed"))
                .and_then(|e| e.downcast::<gst_app::AppSrc>().ok());
            let Some(appsrc) = appsrc else {
                tracing::error!("served media has no appsrc");
                return;
            };
            match Feeder::start(&path, appsrc) {
                Ok(f) => {
                    let stop = f.stop.clone();
                    media.connect_unprepared(move |_| stop.store(true, Ordering::Release));
                    feeders.lock().unwrap_or_else(|p| p.into_inner()).push(f);
                }
                Err(e) => tracing::error!("{e}"),
            }
        });
    }
    let Some(mounts) = server.mount_points() else {
        let _ = ready.send(Err(IngestError::RtspServer(
            "server has no mount points".into(),
        )));
        return;
    };
    mounts.add_factory(&opts.mount, factory);
    let source_id = match server.attach(Some(context)) {
        Ok(id) => id,
        Err(e) => {
            let _ = ready.send(Err(IngestError::RtspServer(format!(
                "cannot listen on {}:{}: {e}",
                opts.bind, opts.port
            ))));
            return;
        }
    };
    let port = u16::try_from(server.bound_port()).unwrap_or(opts.port);
    let _ = ready.send(Ok(port));
    main_loop.run();
    // Tear down: no new connections, drop every client, stop the feeders.
    // The source lives in this thread's context, not the global one `SourceId::remove` uses.
    if let Some(listener) = context.find_source_by_id(&source_id) {
        listener.destroy();
    }
    server.client_filter(Some(&mut |_: &rtsp::RTSPServer, _: &rtsp::RTSPClient| {
        rtsp::RTSPFilterResult::Remove
    }));
    // Sessions outlive their clients until they time out; removing them unprepares the
    // media, which stops its pipeline.
    if let Some(pool) = server.session_pool() {
        pool.filter(Some(
            &mut |_: &rtsp::RTSPSessionPool, _: &rtsp::RTSPSession| rtsp::RTSPFilterResult::Remove,
        ));
    }
    while context.iteration(false) {}
    for mut f in feeders.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
        f.stop();
    }
}
