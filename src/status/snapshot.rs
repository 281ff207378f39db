//! Snapshots: a camera's latest frame as JPEG, optionally with the boxes of the detectors that
//! ran exactly on it drawn in each model's colour. Encoded on request only, on the HTTP
//! thread, from the frame buffer the engine already holds.

use super::model_color;
use crate::frame::Frame;
use crate::models::Detection;

/// JPEG quality of snapshots: enough to read a scene, small enough to poll every second.
const QUALITY: u8 = 80;

/// Width of the drawn box outlines, in pixels.
const LINE_PX: u32 = 3;

/// Encodes `frame` as JPEG; with `boxes` (model index, its detections) the boxes are drawn on
/// a copy first (the engine's buffer is never written).
pub fn encode(frame: &Frame, boxes: Option<&[(usize, Vec<Detection>)]>) -> Result<Vec<u8>, String> {
    let (w, h) = (frame.width, frame.height);
    let (Ok(w16), Ok(h16)) = (u16::try_from(w), u16::try_from(h)) else {
        return Err(format!("a {w}x{h} frame is too large for a JPEG snapshot"));
    };
    let drawn;
    let rgb: &[u8] = match boxes {
        Some(boxes) => {
            let mut copy = frame.rgb.to_vec();
            for (m, dets) in boxes {
                for d in dets {
                    draw_box(&mut copy, w, h, d, model_color(*m));
                }
            }
            drawn = copy;
            drawn.as_slice()
        }
        None => &frame.rgb[..],
    };
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, QUALITY)
        .encode(rgb, w16, h16, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| format!("JPEG encoding failed: {e}"))?;
    Ok(out)
}

/// Draws the outline of `d` (frame pixels, clipped to the frame) into packed RGB.
pub fn draw_box(rgb: &mut [u8], width: u32, height: u32, d: &Detection, color: [u8; 3]) {
    if width == 0 || height == 0 {
        return;
    }
    let clamp = |v: f32, max: u32| -> u32 {
        if v.is_finite() {
            v.round().clamp(0.0, (max - 1) as f32) as u32
        } else {
            0
        }
    };
    let (x1, x2) = (clamp(d.x1.min(d.x2), width), clamp(d.x1.max(d.x2), width));
    let (y1, y2) = (clamp(d.y1.min(d.y2), height), clamp(d.y1.max(d.y2), height));
    let mut put = |x: u32, y: u32| {
        let i = (y as usize * width as usize + x as usize) * 3;
        if let Some(px) = rgb.get_mut(i..i + 3) {
            px.copy_from_slice(&color);
        }
    };
    for t in 0..LINE_PX {
        for x in x1..=x2 {
            put(x, (y1 + t).min(y2));
            put(x, y2.saturating_sub(t).max(y1));
        }
        for y in y1..=y2 {
            put((x1 + t).min(x2), y);
            put(x2.saturating_sub(t).max(x1), y);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn det(x1: f32, y1: f32, x2: f32, y2: f32) -> Detection {
        Detection {
            class: 0,
            score: 0.9,
            x1,
            y1,
            x2,
            y2,
            keypoints: vec![],
        }
    }

    #[test]
    fn a_box_outline_is_drawn_and_its_inside_left_alone() {
        let (w, h) = (20u32, 10u32);
        let mut rgb = vec![0u8; (w * h * 3) as usize];
        draw_box(&mut rgb, w, h, &det(2.0, 2.0, 12.0, 8.0), [255, 0, 0]);
        let at = |x: u32, y: u32| {
            let i = ((y * w + x) * 3) as usize;
            [rgb[i], rgb[i + 1], rgb[i + 2]]
        };
        assert_eq!(at(2, 2), [255, 0, 0]);
        assert_eq!(at(12, 8), [255, 0, 0]);
        assert_eq!(at(7, 2), [255, 0, 0]);
        assert_eq!(at(7, 5), [0, 0, 0], "inside stays");
        assert_eq!(at(15, 5), [0, 0, 0], "outside stays");
    }

    #[test]
    fn boxes_beyond_the_frame_are_clipped_not_a_panic() {
        let (w, h) = (8u32, 8u32);
        let mut rgb = vec![0u8; (w * h * 3) as usize];
        draw_box(&mut rgb, w, h, &det(-50.0, -3.0, 1e9, f32::NAN), [1, 2, 3]);
        assert!(rgb.chunks(3).any(|p| p == [1, 2, 3]));
    }

    #[test]
    fn snapshots_are_jpeg_and_overlays_leave_the_frame_untouched() {
        let (w, h) = (32u32, 24u32);
        let rgb: Arc<[u8]> = vec![128u8; (w * h * 3) as usize].into();
        let frame = Frame::new("cam".into(), 0, None, w, h, rgb.clone()).unwrap();
        let plain = encode(&frame, None).unwrap();
        assert_eq!(&plain[..2], &[0xFF, 0xD8], "JPEG start of image");
        let boxes = vec![(0usize, vec![det(4.0, 4.0, 20.0, 20.0)])];
        let drawn = encode(&frame, Some(&boxes)).unwrap();
        assert_ne!(plain, drawn);
        assert!(frame.rgb.iter().all(|&b| b == 128));
    }
}
