//! Turning frames (or regions of them) into model input tensors: bilinear resize with
//! half-pixel centres, per-channel normalisation, NCHW or NHWC layout.
//!
//! The arithmetic is fixed (f64 sampling coordinates, f32 blending in a set order) so that the
//! Python reference in `models/make_reference.py` reproduces it bit for bit.

use crate::frame::Frame;

/// A region of a frame in pixel coordinates (may extend past the frame: edge pixels repeat).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Region {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

impl Region {
    /// The whole frame.
    pub fn full(frame: &Frame) -> Self {
        Self {
            x: 0.0,
            y: 0.0,
            w: f64::from(frame.width),
            h: f64::from(frame.height),
        }
    }
}

/// Memory layout of one image in the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Channels first: [3, H, W].
    Nchw,
    /// Channels last: [H, W, 3].
    Nhwc,
}

/// Per-channel normalisation `(v - mean[c]) / std[c]` applied to RGB values in 0..255.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalize {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalize {
    pub const IDENTITY: Self = Self {
        mean: [0.0; 3],
        std: [1.0; 3],
    };
    pub const fn uniform(mean: f32, std: f32) -> Self {
        Self {
            mean: [mean; 3],
            std: [std; 3],
        }
    }
}

/// Source index pair and blend weight of one output coordinate.
struct Tap {
    i0: usize,
    i1: usize,
    f: f32,
}

fn taps(start: f64, len: f64, out: usize, limit: u32) -> Vec<Tap> {
    let scale = len / out as f64;
    let max = f64::from(limit.saturating_sub(1));
    (0..out)
        .map(|o| {
            let s = (start + (o as f64 + 0.5) * scale - 0.5).clamp(0.0, max);
            let i0 = s.floor();
            Tap {
                i0: i0 as usize,
                i1: ((i0 as usize) + 1).min(limit.saturating_sub(1) as usize),
                f: (s - i0) as f32,
            }
        })
        .collect()
}

/// Resizes `region` of `frame` to `out_w` x `out_h` and appends the normalised values to `dst`
/// in `layout`. `dst` grows by `out_w * out_h * 3` values.
pub fn resize_normalize(
    frame: &Frame,
    region: Region,
    out_w: usize,
    out_h: usize,
    layout: Layout,
    norm: Normalize,
    dst: &mut Vec<f32>,
) {
    let base = dst.len();
    dst.resize(base + out_w * out_h * 3, 0.0);
    let out = &mut dst[base..];
    let xs = taps(region.x, region.w, out_w, frame.width);
    let ys = taps(region.y, region.h, out_h, frame.height);
    let stride = frame.width as usize * 3;
    let rgb = &frame.rgb[..];
    let plane = out_w * out_h;
    // Index of value (pixel p, channel c) is p * pixel_step + c * channel_step in both layouts.
    let (pixel_step, channel_step) = match layout {
        Layout::Nhwc => (3, 1),
        Layout::Nchw => (1, plane),
    };
    for (oy, ty) in ys.iter().enumerate() {
        let r0 = &rgb[ty.i0 * stride..ty.i0 * stride + stride];
        let r1 = &rgb[ty.i1 * stride..ty.i1 * stride + stride];
        let (wy0, wy1) = (1.0 - ty.f, ty.f);
        let row = oy * out_w;
        for (ox, tx) in xs.iter().enumerate() {
            let (wx0, wx1) = (1.0 - tx.f, tx.f);
            let (a, b) = (tx.i0 * 3, tx.i1 * 3);
            let at = (row + ox) * pixel_step;
            for c in 0..3 {
                let top = f32::from(r0[a + c]) * wx0 + f32::from(r0[b + c]) * wx1;
                let bottom = f32::from(r1[a + c]) * wx0 + f32::from(r1[b + c]) * wx1;
                let v = top * wy0 + bottom * wy1;
                out[at + c * channel_step] = (v - norm.mean[c]) / norm.std[c];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn frame(w: u32, h: u32, f: impl Fn(u32, u32, usize) -> u8) -> Frame {
        let mut rgb = Vec::new();
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    rgb.push(f(x, y, c));
                }
            }
        }
        Frame::new(Arc::from("t"), 0, None, w, h, Arc::from(rgb)).unwrap()
    }

    #[test]
    fn same_size_is_exact_and_layouts_agree() {
        let f = frame(5, 4, |x, y, c| (x * 10 + y * 3 + c as u32) as u8);
        let mut a = Vec::new();
        resize_normalize(
            &f,
            Region::full(&f),
            5,
            4,
            Layout::Nhwc,
            Normalize::IDENTITY,
            &mut a,
        );
        assert_eq!(a, f.rgb.iter().map(|&v| f32::from(v)).collect::<Vec<_>>());
        let mut b = Vec::new();
        resize_normalize(
            &f,
            Region::full(&f),
            5,
            4,
            Layout::Nchw,
            Normalize::uniform(1.0, 2.0),
            &mut b,
        );
        // channel 1 of pixel (2, 3)
        assert_eq!(b[20 + 3 * 5 + 2], (f32::from(f.pixel(2, 3)[1]) - 1.0) / 2.0);
    }

    #[test]
    fn downscale_by_two_averages_pairs() {
        let f = frame(4, 2, |x, _, _| if x % 2 == 0 { 0 } else { 100 });
        let mut a = Vec::new();
        resize_normalize(
            &f,
            Region::full(&f),
            2,
            1,
            Layout::Nhwc,
            Normalize::IDENTITY,
            &mut a,
        );
        assert!(a.iter().all(|&v| (v - 50.0).abs() < 1e-4), "{a:?}");
    }
}
