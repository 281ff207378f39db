//! GStreamer camera ingest: sources, sampling, bounded delivery, reconnection.
