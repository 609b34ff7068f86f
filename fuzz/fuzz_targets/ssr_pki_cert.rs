#![no_main]
//! Certificate parser and checks: any bytes are an error or a certificate, never a panic;
//! the per-certificate checks and a self-signature check run on whatever parses.

use libfuzzer_sys::fuzz_target;
use ssr_pki::{Certificate, Role, check_certificate};

fuzz_target!(|data: &[u8]| {
    if let Ok(cert) = Certificate::from_der(data) {
        assert_eq!(cert.der(), data);
        for role in [Role::Leaf, Role::Intermediate, Role::Root] {
            let _ = check_certificate(&cert, role, cert.not_before());
        }
        let _ = (
            cert.subject_cn(),
            cert.san_uris(),
            cert.crl_distribution_points(),
        );
        let _ = ssr_pki::check_peer_identity(&cert, "peer");
    }
});
