//! Usage tap: random formats, content types, encodings (valid and garbage)
//! and chunk splits. Logic in `portcullis_llm::fuzzing::tap`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis_llm::fuzzing::tap(data));
