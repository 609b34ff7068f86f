#![no_main]
//! Certificate import and trust-bundle install on any text: an error naming its reason
//! or an accepted certificate, never a panic; a text with a private-key block is never
//! accepted.

use libfuzzer_sys::fuzz_target;
use ssr_pki::import::{ImportPolicy, import_certificate};
use ssr_pki::trust::{TrustBundle, ValidationMode};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let has_key = text.lines().any(|l| {
        let l = l.trim();
        l.starts_with("-----BEGIN ") && l.ends_with("-----") && l.contains("PRIVATE KEY")
    });
    let imported = import_certificate(&text, &ImportPolicy::new(1_800_000_000).skip_chain_check());
    let installed = TrustBundle::install(&text, ValidationMode::Warn, 1_800_000_000);
    if has_key {
        assert!(imported.is_err() && installed.is_err());
    }
});
