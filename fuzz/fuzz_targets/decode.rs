//! The record decoder on arbitrary bytes: any input either decodes (and then validates to a
//! verdict) or is refused with an error; nothing panics, loops or allocates without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(event) = safetel::codec::decode(bytes) {
        let _ = safetel::model::validate(&event);
    }
    let _ = safetel::codec::decode_review_request(bytes);
});
