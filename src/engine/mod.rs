//! The live system behind `mlink run`: cameras, model sessions, link predictions, the
//! re-selection loop, sinks and metrics.

pub mod record;
pub mod sink;
