//! The `portico` command line: wires the lb, gss and shared crates together.

fn main() {}
