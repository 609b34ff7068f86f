#![no_main]
//! Any bytes to the v2 context parser: an error or a context that re-encodes to the input.

use libfuzzer_sys::fuzz_target;
use ssr_fscrypt::ContextV2;

fuzz_target!(|data: &[u8]| {
    if let Ok(ctx) = ContextV2::parse(data) {
        assert_eq!(&ctx.to_bytes()[..], data);
    }
});
