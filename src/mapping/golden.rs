//! Golden tests (in progress).
