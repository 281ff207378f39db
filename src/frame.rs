//! The unit of work that flows from ingest to the engine: one decoded RGB frame of one camera.

use std::sync::Arc;
use std::time::SystemTime;

/// A decoded, sampled frame in packed RGB (3 bytes per pixel, no row padding).
#[derive(Clone, Debug)]
pub struct Frame {
    /// Camera id from the pipeline file.
    pub camera: Arc<str>,
    /// Sequence number of this frame among the frames the camera delivered (after sampling),
    /// starting at 0.
    pub seq: u64,
    /// Presentation timestamp in nanoseconds from the start of the stream, when known.
    pub pts_ns: Option<u64>,
    /// Wall-clock time at which the frame left the decoder.
    pub wall_time: SystemTime,
    pub width: u32,
    pub height: u32,
    /// `width * height * 3` bytes, row-major RGB.
    pub rgb: Arc<[u8]>,
}

impl Frame {
    /// Builds a frame, checking that the buffer holds exactly `width * height * 3` bytes.
    pub fn new(
        camera: Arc<str>,
        seq: u64,
        pts_ns: Option<u64>,
        width: u32,
        height: u32,
        rgb: Arc<[u8]>,
    ) -> Result<Self, FrameError> {
        let expected = width as usize * height as usize * 3;
        if rgb.len() != expected {
            return Err(FrameError::Size {
                width,
                height,
                expected,
                got: rgb.len(),
            });
        }
        Ok(Self {
            camera,
            seq,
            pts_ns,
            wall_time: SystemTime::now(),
            width,
            height,
            rgb,
        })
    }

    /// The RGB triple at (x, y); callers keep x < width and y < height.
    #[inline]
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = (y as usize * self.width as usize + x as usize) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame buffer of {got} bytes does not match {width}x{height} RGB ({expected} bytes)")]
    Size {
        width: u32,
        height: u32,
        expected: usize,
        got: usize,
    },
}
