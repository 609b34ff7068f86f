#![no_main]
use libfuzzer_sys::fuzz_target;
use ssr_svr_crypto::peer::Control;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Control::decode(data) {
        assert_eq!(c.encode(), data);
    }
});
