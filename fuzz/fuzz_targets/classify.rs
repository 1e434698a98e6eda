//! Classifier: random method, host, port, path, content type and body.
//! Logic in `portcullis_llm::fuzzing::classify`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis_llm::fuzzing::classify(data));
