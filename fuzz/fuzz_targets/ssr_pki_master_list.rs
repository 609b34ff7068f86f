#![no_main]
//! The published master revoked list: any text is an error or a list that serialises
//! back to text that parses to the same list.

use libfuzzer_sys::fuzz_target;
use ssr_pki::crl_manager::MasterList;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(list) = MasterList::from_json(&text) {
        let again = MasterList::from_json(&list.to_json()).expect("re-parse");
        assert_eq!(again, list);
    }
});
