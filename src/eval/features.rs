//! Reducto's low-level frame-difference features, computed with OpenCV imgproc on two
//! consecutive RGB frames (feature `opencv`).
//!
//! Each feature is a share of the frame in [0, 1], zero for identical frames:
//! - `pixel`: pixels whose grey-level absolute difference exceeds a noise floor;
//! - `area`: the largest connected changed region (contour area) of the blurred grey
//!   difference;
//! - `edge`: pixels where the Canny edge maps of the blurred grey frames differ;
//! - `corner`: pixels where the dilated Harris corner responses differ.
//!
//! The parameters are Reducto's published defaults (blur kernel 11, difference floor 21, Canny
//! 101/255, Harris block 5, aperture 3, k 0.05).

use crate::frame::Frame;
use opencv::core::{self, Mat, Point, Size, Vector};
use opencv::imgproc;
use opencv::prelude::*;

/// The feature names, in the order [`frame_features`] returns them.
pub use super::reducto::FEATURE_NAMES;

const DIFF_FLOOR: f64 = 21.0;
const BLUR_KERNEL: i32 = 11;
const CANNY_LOW: f64 = 101.0;
const CANNY_HIGH: f64 = 255.0;
const HARRIS_BLOCK: i32 = 5;
const HARRIS_APERTURE: i32 = 3;
const HARRIS_K: f64 = 0.05;

#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    #[error("frames differ in size: {a_w}x{a_h} and {b_w}x{b_h}")]
    SizeMismatch {
        a_w: u32,
        a_h: u32,
        b_w: u32,
        b_h: u32,
    },
    #[error("an RGB buffer of {got} bytes does not match {width}x{height} ({expected} bytes)")]
    BufferSize {
        width: u32,
        height: u32,
        expected: usize,
        got: usize,
    },
    #[error("frame of {width}x{height} is too large or empty for the frame-difference features")]
    Dimensions { width: u32, height: u32 },
    #[error("OpenCV: {0}")]
    OpenCv(#[from] opencv::Error),
}

/// The four features of `cur` against `prev` (see the module documentation).
pub fn frame_features(prev: &Frame, cur: &Frame) -> Result<Vec<f32>, FeatureError> {
    if (prev.width, prev.height) != (cur.width, cur.height) {
        return Err(FeatureError::SizeMismatch {
            a_w: prev.width,
            a_h: prev.height,
            b_w: cur.width,
            b_h: cur.height,
        });
    }
    rgb_features(cur.width, cur.height, &prev.rgb, &cur.rgb)
}

/// Like [`frame_features`], on raw packed RGB buffers of `width` x `height`.
pub fn rgb_features(
    width: u32,
    height: u32,
    prev: &[u8],
    cur: &[u8],
) -> Result<Vec<f32>, FeatureError> {
    let a = Prepared::new(width, height, prev)?;
    let b = Prepared::new(width, height, cur)?;
    b.diff(&a)
}

/// Feature extraction over a stream: keeps the previous frame's prepared maps so that each
/// frame is processed once. The first frame (or the first after a size change) gets zeros.
#[derive(Default)]
pub struct FrameDiffer {
    prev: Option<Prepared>,
}

impl FrameDiffer {
    pub fn new() -> Self {
        Self::default()
    }

    /// The features of this frame against the previous one pushed.
    pub fn push(&mut self, width: u32, height: u32, rgb: &[u8]) -> Result<Vec<f32>, FeatureError> {
        let cur = Prepared::new(width, height, rgb)?;
        let out = match &self.prev {
            Some(p) if (p.width, p.height) == (width, height) => cur.diff(p)?,
            _ => vec![0.0; FEATURE_NAMES.len()],
        };
        self.prev = Some(cur);
        Ok(out)
    }
}

/// One frame's maps: colour, blurred grey, Canny edges, dilated Harris response.
struct Prepared {
    width: u32,
    height: u32,
    rgb: Mat,
    blurred: Mat,
    edges: Mat,
    corners: Mat,
}

impl Prepared {
    fn new(width: u32, height: u32, rgb: &[u8]) -> Result<Self, FeatureError> {
        let expected = width as usize * height as usize * 3;
        if rgb.len() != expected {
            return Err(FeatureError::BufferSize {
                width,
                height,
                expected,
                got: rgb.len(),
            });
        }
        let (w, h) = match (i32::try_from(width), i32::try_from(height)) {
            (Ok(w), Ok(h)) if w > 0 && h > 0 => (w, h),
            _ => return Err(FeatureError::Dimensions { width, height }),
        };
        let flat = Mat::from_slice(rgb)?;
        let rgb_mat = flat.reshape(3, h)?.try_clone()?;
        debug_assert_eq!(rgb_mat.cols(), w);

        let mut gray = Mat::default();
        imgproc::cvt_color_def(&rgb_mat, &mut gray, imgproc::COLOR_RGB2GRAY)?;
        let mut blurred = Mat::default();
        imgproc::gaussian_blur_def(
            &gray,
            &mut blurred,
            Size::new(BLUR_KERNEL, BLUR_KERNEL),
            0.0,
        )?;
        let mut edges = Mat::default();
        imgproc::canny_def(&blurred, &mut edges, CANNY_LOW, CANNY_HIGH)?;
        let mut harris = Mat::default();
        imgproc::corner_harris_def(&gray, &mut harris, HARRIS_BLOCK, HARRIS_APERTURE, HARRIS_K)?;
        let mut corners = Mat::default();
        imgproc::dilate_def(&harris, &mut corners, &Mat::default())?;
        Ok(Prepared {
            width,
            height,
            rgb: rgb_mat,
            blurred,
            edges,
            corners,
        })
    }

    fn pixels(&self) -> f64 {
        f64::from(self.width) * f64::from(self.height)
    }

    /// The features of `self` against the earlier frame `prev`.
    fn diff(&self, prev: &Prepared) -> Result<Vec<f32>, FeatureError> {
        let total = self.pixels();

        // pixel: grey level of the colour difference above the noise floor.
        let mut d = Mat::default();
        core::absdiff(&self.rgb, &prev.rgb, &mut d)?;
        let mut dg = Mat::default();
        imgproc::cvt_color_def(&d, &mut dg, imgproc::COLOR_RGB2GRAY)?;
        let mut mask = Mat::default();
        imgproc::threshold(&dg, &mut mask, DIFF_FLOOR, 255.0, imgproc::THRESH_BINARY)?;
        let pixel = f64::from(core::count_non_zero(&mask)?) / total;

        // area: the largest external contour of the dilated changed mask.
        let mut d = Mat::default();
        core::absdiff(&self.blurred, &prev.blurred, &mut d)?;
        let mut mask = Mat::default();
        imgproc::threshold(&d, &mut mask, DIFF_FLOOR, 255.0, imgproc::THRESH_BINARY)?;
        let mut dilated = Mat::default();
        imgproc::dilate_def(&mask, &mut dilated, &Mat::default())?;
        let mut contours: Vector<Vector<Point>> = Vector::new();
        imgproc::find_contours_def(
            &dilated,
            &mut contours,
            imgproc::RETR_EXTERNAL,
            imgproc::CHAIN_APPROX_SIMPLE,
        )?;
        let mut area = 0.0f64;
        for c in contours.iter() {
            area = area.max(imgproc::contour_area_def(&c)? / total);
        }

        // edge: edge pixels that appeared or disappeared.
        let mut d = Mat::default();
        core::absdiff(&self.edges, &prev.edges, &mut d)?;
        let mut mask = Mat::default();
        imgproc::threshold(&d, &mut mask, DIFF_FLOOR, 255.0, imgproc::THRESH_BINARY)?;
        let edge = f64::from(core::count_non_zero(&mask)?) / total;

        // corner: pixels where the corner response changed at all.
        let mut d = Mat::default();
        core::absdiff(&self.corners, &prev.corners, &mut d)?;
        let corner = f64::from(core::count_non_zero(&d)?) / total;

        Ok(vec![pixel as f32, area as f32, edge as f32, corner as f32])
    }
}
