#![no_main]
//! onboarding-config.json, the conductor configuration and OpenSSH public key lines.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ssr_onboard::config::OnboardingConfig::parse(data);
    let _ = ssr_onboard::config::ConductorConfig::parse(data);
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(k) = ssr_onboard::ssh::SshPublicKey::parse(s)
    {
        assert_eq!(
            ssr_onboard::ssh::SshPublicKey::parse(&k.to_line()).expect("re-parse"),
            k
        );
    }
});
