//! API kinds, the resource table and validation: no I/O.
#![forbid(unsafe_code)]
