#![no_main]
//! Any bytes to the key-store entry parser: an error or an entry that re-encodes to
//! the input.

use libfuzzer_sys::fuzz_target;
use ssr_tpm::keystore::KeyEntry;

fuzz_target!(|data: &[u8]| {
    if let Ok(entry) = KeyEntry::parse(data) {
        assert_eq!(entry.to_bytes(), data);
    }
});
