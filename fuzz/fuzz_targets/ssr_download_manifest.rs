#![no_main]
//! The download wire parsers: image manifest and versions list. Any bytes: an error
//! or a value, never a panic; a parsed manifest re-encodes to itself.

use libfuzzer_sys::fuzz_target;
use ssr_download::Manifest;
use ssr_download::wire::parse_versions;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::parse(data) {
        assert_eq!(Manifest::parse(&m.to_json()).as_ref(), Ok(&m));
        for i in 0..m.chunk_count() {
            let r = m.chunk_range(i);
            assert!(r.start < r.end && r.end <= m.size());
        }
    }
    let _ = parse_versions(data);
});
