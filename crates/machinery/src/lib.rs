//! Pure API machinery: patches (JSON, merge, strategic, apply), selectors, field paths.
#![forbid(unsafe_code)]
