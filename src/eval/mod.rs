//! Offline evaluation: replay of scheduling methods over recorded traces, baselines and reports.
