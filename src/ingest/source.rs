//! What a camera URI names, and the GStreamer pipeline that decodes it.
//!
//! ```text
//! rtsp://   uridecodebin (rtspsrc: protocols, latency) ┐
//! file      uridecodebin                               ├─ [sampling probe] videoscale ! videoconvert
//! test:P    videotestsrc is-live pattern=P ! caps      ┘      ! video/x-raw,format=RGB[,width,height] ! appsink
//! ```
//!
//! `uridecodebin` is used for RTSP too (with `rtspsrc` configured in `source-setup`), so every
//! decoded source goes through the same dynamic-pad path; only video is exposed. `videoscale`
//! comes before `videoconvert`: converting the smaller image is about twice as fast at 1080p.

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use std::path::{Path, PathBuf};

use crate::config::{CameraConfig, RtspTransport};

use super::IngestError;

/// Size and rate of `test:` sources (before scaling to the camera's size).
pub const TEST_WIDTH: i32 = 640;
pub const TEST_HEIGHT: i32 = 480;
pub const TEST_FPS: i32 = 30;

/// The kind of source a camera URI names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// `rtsp://`, `rtsps://`, `rtspt://`: a network camera, reconnected when lost.
    Rtsp(String),
    /// A local file (absolute path, resolved against the base directory).
    File(PathBuf),
    /// A `videotestsrc` pattern (`test:smpte`, `test:ball`, ...).
    Test(String),
}

impl SourceKind {
    /// Parses a camera URI; relative file paths are resolved against `base_dir`.
    pub fn parse(uri: &str, base_dir: &Path) -> Result<Self, IngestError> {
        let uri = uri.trim();
        if uri.is_empty() {
            return Err(IngestError::Config("camera uri is empty".into()));
        }
        if let Some(pattern) = uri.strip_prefix("test:") {
            check_test_pattern(pattern)?;
            return Ok(Self::Test(pattern.to_string()));
        }
        let lower = uri.to_ascii_lowercase();
        if ["rtsp://", "rtsps://", "rtspt://"]
            .iter()
            .any(|p| lower.starts_with(p))
        {
            return Ok(Self::Rtsp(uri.to_string()));
        }
        if lower.starts_with("file://") {
            let (path, _) = glib::filename_from_uri(uri).map_err(|e| {
                IngestError::Config(format!("`{uri}` is not a valid file URI: {e}"))
            })?;
            return Ok(Self::File(path));
        }
        if let Some((scheme, _)) = uri.split_once("://") {
            return Err(IngestError::Config(format!(
                "unsupported URI scheme `{scheme}` in `{uri}`: use rtsp://, file://, a file path or test:PATTERN"
            )));
        }
        // `absolute` also anchors a relative base directory at the working directory.
        let path = std::path::absolute(base_dir.join(uri)).map_err(|e| {
            IngestError::Config(format!(
                "cannot resolve `{uri}` against {}: {e}",
                base_dir.display()
            ))
        })?;
        Ok(Self::File(path))
    }

    /// Network sources are retried when lost; files and test patterns are not.
    pub fn is_network(&self) -> bool {
        matches!(self, Self::Rtsp(_))
    }
}

/// Checks a `videotestsrc` pattern name (e.g. `smpte`, `ball`, `snow`).
pub fn check_test_pattern(pattern: &str) -> Result<(), IngestError> {
    super::init()?;
    let src = make("videotestsrc")?;
    let pspec = src
        .find_property("pattern")
        .ok_or_else(|| IngestError::Gst("videotestsrc has no `pattern` property".into()))?;
    let class = glib::EnumClass::with_type(pspec.value_type())
        .ok_or_else(|| IngestError::Gst("videotestsrc pattern is not an enum".into()))?;
    if class.value_by_nick(pattern).is_some() {
        return Ok(());
    }
    let names: Vec<&str> = class.values().iter().map(|v| v.nick()).collect();
    Err(IngestError::Config(format!(
        "unknown test pattern `{pattern}`: expected one of {}",
        names.join(", ")
    )))
}

/// How the appsink paces a source.
#[derive(Clone, Copy, Debug)]
pub struct BuildOptions {
    /// Play files at their own rate, like a camera (`true`), or as fast as they decode.
    pub realtime_files: bool,
}

/// A built, not yet started, decoding pipeline.
pub struct BuiltPipeline {
    pub pipeline: gst::Pipeline,
    pub appsink: gst_app::AppSink,
    /// The pad where decoded frames enter scaling; the sampling probe sits here.
    pub decoded: gst::Pad,
}

pub(crate) fn make(factory: &str) -> Result<gst::Element, IngestError> {
    gst::ElementFactory::make(factory).build().map_err(|_| {
        IngestError::Gst(format!(
            "GStreamer element `{factory}` is not available: install the GStreamer plugins (scripts/setup.sh)"
        ))
    })
}

fn gst_err(what: &str) -> impl Fn(glib::BoolError) -> IngestError + '_ {
    move |e| IngestError::Gst(format!("{what}: {e}"))
}

/// The caps delivered to the appsink: packed RGB at the camera's size, if set.
fn output_caps(width: Option<u32>, height: Option<u32>) -> gst::Caps {
    let mut b = gst::Caps::builder("video/x-raw").field("format", "RGB");
    if let Some(w) = width {
        b = b.field("width", w.min(i32::MAX as u32) as i32);
    }
    if let Some(h) = height {
        b = b.field("height", h.min(i32::MAX as u32) as i32);
    }
    b.build()
}

/// Builds the pipeline for one camera.
pub fn build(
    kind: &SourceKind,
    cam: &CameraConfig,
    opts: BuildOptions,
) -> Result<BuiltPipeline, IngestError> {
    let pipeline = gst::Pipeline::with_name(&format!("camera-{}", cam.id));
    let scale = make("videoscale")?;
    let convert = make("videoconvert")?;
    let filter = make("capsfilter")?;
    filter.set_property("caps", output_caps(cam.width, cam.height));
    let sync = match kind {
        SourceKind::File(_) => opts.realtime_files,
        // Live sources are already paced by the camera; syncing would only add latency.
        SourceKind::Rtsp(_) | SourceKind::Test(_) => false,
    };
    // Frames are pulled from the callback as soon as they arrive, so the appsink's own queue
    // holds at most one; the bounded camera queue is the only buffer.
    let appsink = gst_app::AppSink::builder()
        .sync(sync)
        .max_buffers(1)
        .drop(false)
        .enable_last_sample(false)
        .build();
    pipeline
        .add_many([
            &scale,
            &convert,
            &filter,
            appsink.upcast_ref::<gst::Element>(),
        ])
        .map_err(gst_err("adding elements"))?;
    gst::Element::link_many([
        &scale,
        &convert,
        &filter,
        appsink.upcast_ref::<gst::Element>(),
    ])
    .map_err(gst_err("linking scale, convert and appsink"))?;
    let decoded = scale
        .static_pad("sink")
        .ok_or_else(|| IngestError::Gst("videoscale has no sink pad".into()))?;

    match kind {
        SourceKind::Test(pattern) => {
            let src = make("videotestsrc")?;
            src.set_property("is-live", true);
            src.set_property_from_str("pattern", pattern);
            let caps = make("capsfilter")?;
            caps.set_property(
                "caps",
                gst::Caps::builder("video/x-raw")
                    .field("width", TEST_WIDTH)
                    .field("height", TEST_HEIGHT)
                    .field("framerate", gst::Fraction::new(TEST_FPS, 1))
                    .build(),
            );
            pipeline
                .add_many([&src, &caps])
                .map_err(gst_err("adding test source"))?;
            gst::Element::link_many([&src, &caps, &scale])
                .map_err(gst_err("linking test source"))?;
        }
        SourceKind::File(path) => {
            let uri = glib::filename_to_uri(path, None).map_err(|e| {
                IngestError::Config(format!("cannot make a URI of {}: {e}", path.display()))
            })?;
            add_uridecodebin(&pipeline, uri.as_str(), &decoded, None)?;
        }
        SourceKind::Rtsp(uri) => {
            add_uridecodebin(&pipeline, uri, &decoded, Some(cam))?;
        }
    }
    Ok(BuiltPipeline {
        pipeline,
        appsink,
        decoded,
    })
}

/// Adds a `uridecodebin` exposing only decoded video, linked to `target` when its pad appears.
fn add_uridecodebin(
    pipeline: &gst::Pipeline,
    uri: &str,
    target: &gst::Pad,
    rtsp: Option<&CameraConfig>,
) -> Result<(), IngestError> {
    let dec = make("uridecodebin")?;
    dec.set_property("uri", uri);
    if let Some(cam) = rtsp {
        let protocols = match cam.rtsp.transport {
            RtspTransport::Tcp => "tcp",
            RtspTransport::Udp => "udp",
        };
        let latency = cam.rtsp.latency_ms;
        dec.connect("source-setup", false, move |args| {
            if let Some(src) = args.get(1).and_then(|v| v.get::<gst::Element>().ok())
                && src.find_property("protocols").is_some()
            {
                src.set_property_from_str("protocols", protocols);
                src.set_property("latency", latency);
                // Late packets are dropped instead of piling up in the jitter buffer.
                src.set_property("drop-on-latency", true);
            }
            None
        });
    }
    // Restricting uridecodebin to video (`caps` with `expose-all-streams=false`) made it
    // fail to find a decoder for some AVI files; instead the first video stream is linked
    // and any other stream is discarded into a fakesink.
    let target = target.clone();
    dec.connect_pad_added(move |dec, pad| {
        let is_video = pad
            .current_caps()
            .or_else(|| Some(pad.query_caps(None)))
            .and_then(|c| c.structure(0).map(|s| s.name().starts_with("video/x-raw")))
            .unwrap_or(false);
        let linked = if is_video && !target.is_linked() {
            pad.link(&target).map(|_| ()).map_err(|e| format!("{e:?}"))
        } else {
            discard(dec, pad)
        };
        if let Err(e) = linked {
            tracing::warn!("cannot link a decoded stream: {e}");
        }
    });
    pipeline.add(&dec).map_err(gst_err("adding uridecodebin"))?;
    Ok(())
}

/// Links an unused decoded stream to a fakesink so that it never blocks the others.
fn discard(dec: &gst::Element, pad: &gst::Pad) -> Result<(), String> {
    let bin = dec
        .parent()
        .and_then(|p| p.downcast::<gst::Bin>().ok())
        .ok_or("decoder outside a bin")?;
    let sink = gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .property("async", false)
        .build()
        .map_err(|e| e.to_string())?;
    bin.add(&sink).map_err(|e| e.to_string())?;
    sink.sync_state_with_parent().map_err(|e| e.to_string())?;
    let sink_pad = sink.static_pad("sink").ok_or("fakesink without pad")?;
    pad.link(&sink_pad)
        .map(|_| ())
        .map_err(|e| format!("{e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_are_classified() {
        let base = Path::new("/pipelines");
        assert_eq!(
            SourceKind::parse("rtsp://10.0.0.1/cam", base).unwrap(),
            SourceKind::Rtsp("rtsp://10.0.0.1/cam".into())
        );
        assert_eq!(
            SourceKind::parse("clips/a.mp4", base).unwrap(),
            SourceKind::File("/pipelines/clips/a.mp4".into())
        );
        assert_eq!(
            SourceKind::parse("/data/a.mp4", base).unwrap(),
            SourceKind::File("/data/a.mp4".into())
        );
        assert_eq!(
            SourceKind::parse("file:///data/a%20b.mp4", base).unwrap(),
            SourceKind::File("/data/a b.mp4".into())
        );
        assert_eq!(
            SourceKind::parse("test:ball", base).unwrap(),
            SourceKind::Test("ball".into())
        );
        let e = SourceKind::parse("test:nonsense", base)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown test pattern") && e.contains("smpte"),
            "{e}"
        );
        let e = SourceKind::parse("http://x/y", base)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unsupported URI scheme `http`"), "{e}");
        assert!(SourceKind::parse("  ", base).is_err());
    }
}
