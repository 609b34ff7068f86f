#![no_main]
//! Any string to the no-key name decoder: an error or a name that re-encodes to the input.

use libfuzzer_sys::fuzz_target;
use ssr_fscrypt::NoKeyName;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(name) = NoKeyName::decode(s)
    {
        assert_eq!(name.encode(), s);
    }
});
