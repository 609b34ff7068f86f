#![no_main]
//! Any bytes to the sealed-FEK parser: an error or a file that re-encodes to the input.

use libfuzzer_sys::fuzz_target;
use ssr_tpm::SealedFek;

fuzz_target!(|data: &[u8]| {
    if let Ok(sealed) = SealedFek::parse(data) {
        assert_eq!(sealed.to_bytes(), data);
    }
});
