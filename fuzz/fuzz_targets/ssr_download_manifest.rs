#![no_main]
//! The download wire parsers: image manifest, signed manifest and versions list. Any
//! bytes: an error or a value, never a panic; a parsed manifest re-encodes to itself;
//! an unsigned manifest accepted only where unsigned is allowed; `sha256-chunks-only`
//! accepts exactly the accepted manifests with SHA-256 chunk digests.

use libfuzzer_sys::fuzz_target;
use ssr_download::wire::parse_versions;
use ssr_download::{ChunkHash, Manifest, ManifestTrust, verify_manifest};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::parse(data) {
        assert_eq!(Manifest::parse(&m.to_json()).as_ref(), Ok(&m));
        for i in 0..m.chunk_count() {
            let r = m.chunk_range(i);
            assert!(r.start < r.end && r.end <= m.size());
        }
    }
    let _ = parse_versions(data);
    // No trusted key: nothing verifies; allowing unsigned accepts exactly what parses.
    assert!(verify_manifest(data, &ManifestTrust::default()).is_err());
    let open = ManifestTrust {
        allow_unsigned: true,
        ..ManifestTrust::default()
    };
    let sha256_only = ManifestTrust {
        sha256_chunks_only: true,
        ..open.clone()
    };
    let strict = verify_manifest(data, &sha256_only);
    match verify_manifest(data, &open) {
        Ok(m) => {
            assert_eq!(Manifest::parse(data).as_ref(), Ok(&m));
            assert_eq!(strict.is_ok(), m.chunk_hash() == ChunkHash::Sha256);
        }
        Err(_) => assert!(strict.is_err()),
    }
});
