//! Fuzz target: `wharf::fuzzing::accept` (its invariants are documented there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wharf::fuzzing::accept(data));
