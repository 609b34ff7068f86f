#![no_main]
//! Any bytes, as read from an NV index, to the device-certificate parser: an error or
//! an identity whose certificate is a prefix of the input followed only by padding.

use libfuzzer_sys::fuzz_target;
use ssr_tpm::identity::parse_device_certificate;

fuzz_target!(|data: &[u8]| {
    if let Ok(id) = parse_device_certificate(data, "fuzz") {
        assert!(data.starts_with(&id.der));
    }
});
