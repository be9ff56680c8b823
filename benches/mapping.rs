//! Criterion benchmark of mapping evaluation (to be written).
fn main() {}
