//! Shared pieces of the runnable programs in `examples/`: each capability's walk-through
//! is a function here, so `device-demo` and the single-capability examples run the same
//! code.

pub mod onboard;
pub mod pki;
pub mod steps;
pub mod svr;
pub mod svr_scale;

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A throwaway self-signed CA with commonName `cn` (a fresh P-256 key, unconstrained,
/// key usages certificate and CRL signing): its certificate and the issuer that signs
/// with it.
pub fn throwaway_ca(
    cn: &str,
) -> Result<(rcgen::Certificate, rcgen::Issuer<'static, rcgen::KeyPair>), rcgen::Error> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, cn);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let cert = ca.self_signed(&ca_key)?;
    Ok((cert, Issuer::new(ca, ca_key)))
}
