#![no_main]
//! Token parser and verifier: any input is an error or a token, never a panic.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(t) = ssr_onboard::Token::parse(s)
    {
        // A parsed token re-parses from its own compact form.
        let again = ssr_onboard::Token::parse(t.as_str()).expect("re-parse");
        assert_eq!(again, t);
    }
});
