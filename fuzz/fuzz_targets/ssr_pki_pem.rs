#![no_main]
//! PEM bundle parser: any text is an error or a list of blocks, never a panic; parsed
//! certificates and CRLs re-parse from their own encoding.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(items) = ssr_pki::parse_pem_bundle(&text) {
        for item in items {
            match item {
                ssr_pki::PemItem::Certificate(c) => {
                    let again = ssr_pki::Certificate::from_pem(&c.to_pem()).expect("re-parse");
                    assert_eq!(again, c);
                }
                ssr_pki::PemItem::Crl(c) => {
                    let again = ssr_pki::Crl::from_pem(&c.to_pem()).expect("re-parse");
                    assert_eq!(again, c);
                }
                _ => {}
            }
        }
    }
});
