#![no_main]
//! Any bytes to the v2 policy parser: an error or a policy that re-encodes to the input.

use libfuzzer_sys::fuzz_target;
use ssr_fscrypt::PolicyV2;

fuzz_target!(|data: &[u8]| {
    if let Ok(policy) = PolicyV2::parse(data) {
        assert_eq!(&policy.to_bytes()[..], data);
    }
});
