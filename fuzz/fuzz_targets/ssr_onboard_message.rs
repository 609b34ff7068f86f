#![no_main]
//! Onboarding wire messages: strict parse; what parses re-encodes to an equal message.

use libfuzzer_sys::fuzz_target;
use ssr_onboard::msg::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::parse(data) {
        let again = Message::parse(&m.encode()).expect("canonical encoding parses");
        assert_eq!(again, m);
    }
});
