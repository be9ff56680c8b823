//! CLI functions (in progress).
