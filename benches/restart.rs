//! Placeholder until the performance issue: the restart benchmark lands here.
fn main() {}
