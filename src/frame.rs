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

    /// The frame shrunk to `width x height` packed RGB by averaging each output pixel's
    /// source box (area resampling, which keeps the mean colour of every region; the boxes
    /// of a side that is enlarged hold one source pixel each). Traces store it as the
    /// frame's thumbnail.
    pub fn thumbnail(&self, width: u32, height: u32) -> Vec<u8> {
        downscale_rgb(&self.rgb, self.width, self.height, width, height)
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

/// Area resampling of a packed RGB image (`src` holds `sw * sh * 3` bytes) to `dw x dh`; an
/// empty source gives black.
pub fn downscale_rgb(src: &[u8], sw: u32, sh: u32, dw: u32, dh: u32) -> Vec<u8> {
    let (sw, sh, dw, dh) = (sw as usize, sh as usize, dw as usize, dh as usize);
    let mut out = vec![0u8; dw * dh * 3];
    if sw == 0 || sh == 0 || src.len() < sw * sh * 3 {
        return out;
    }
    // Source range [lo, hi) of output index `i` along a side of `n` source and `m` output
    // pixels; never empty.
    let span = |i: usize, n: usize, m: usize| {
        let lo = i * n / m;
        let hi = ((i + 1) * n / m).max(lo + 1).min(n);
        (lo.min(n - 1), hi)
    };
    for y in 0..dh {
        let (y0, y1) = span(y, sh, dh);
        for x in 0..dw {
            let (x0, x1) = span(x, sw, dw);
            let mut sum = [0u64; 3];
            for row in y0..y1 {
                let base = (row * sw + x0) * 3;
                for px in src[base..base + (x1 - x0) * 3].chunks_exact(3) {
                    sum[0] += u64::from(px[0]);
                    sum[1] += u64::from(px[1]);
                    sum[2] += u64::from(px[2]);
                }
            }
            let n = ((y1 - y0) * (x1 - x0)) as u64;
            let o = (y * dw + x) * 3;
            for c in 0..3 {
                out[o + c] = ((sum[c] + n / 2) / n) as u8;
            }
        }
    }
    out
}

#[cfg(test)]
mod thumbnail_tests {
    use super::*;

    #[test]
    fn area_resampling_averages_each_box() {
        // 4x2 image: left half red (200, 0, 0), right half alternating 0 and 100 in green.
        let mut rgb = Vec::new();
        for _y in 0..2 {
            for x in 0..4 {
                if x < 2 {
                    rgb.extend_from_slice(&[200, 0, 0]);
                } else {
                    rgb.extend_from_slice(&[0, if x == 2 { 0 } else { 100 }, 10]);
                }
            }
        }
        let f = Frame::new("c".into(), 0, None, 4, 2, rgb.into()).unwrap();
        assert_eq!(f.thumbnail(2, 1), vec![200, 0, 0, 0, 50, 10]);
        assert_eq!(f.thumbnail(4, 2).len(), 24);
        assert_eq!(f.thumbnail(4, 2), f.rgb.to_vec());
        // Enlarging a side repeats pixels instead of failing.
        assert_eq!(f.thumbnail(8, 1).len(), 24);
        assert_eq!(&f.thumbnail(8, 1)[..3], &[200, 0, 0]);
    }
}
