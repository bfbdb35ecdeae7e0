//! Fuzzes `proto::codec::decode`: it must never panic, and whatever it
//! accepts must validate and round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::codec::{Limits, decode, encode, validate};

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = decode(data, Limits::default()) {
        assert!(validate(&frame).is_ok());
        let again = decode(&encode(&frame), Limits::default());
        assert_eq!(again.ok(), Some(frame));
    }
    // A tight limit exercises the size check on the same input.
    let _ = decode(data, Limits::with_max_frame(64));
});
