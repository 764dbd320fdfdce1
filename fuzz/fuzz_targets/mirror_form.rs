//! Fuzz target: `wharf::fuzzing::mirror_form` (its invariants are documented there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wharf::fuzzing::mirror_form(data));
