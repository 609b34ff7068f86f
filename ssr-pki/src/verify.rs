//! Chain (path) validation for peer certificates, and the peer identity check.
//!
//! rustls-webpki builds the path (with backtracking, loop prevention and a work budget),
//! checks every signature, validity, path length, name constraints and CRLs (signature,
//! issuer cRLSign, freshness). Every candidate path it finds is then put through this
//! crate's own per-certificate checks ([`check_certificate`](crate::check_certificate)'s
//! structural part) where webpki is silent; a candidate that fails them makes webpki
//! backtrack and try the next one.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use webpki::{ExtendedKeyUsageValidator, KeyPurposeIdIter};

use crate::Error;
use crate::cert::Certificate;
use crate::cert::{OID_ANY_EKU, OID_KP_CLIENT_AUTH, OID_KP_SERVER_AUTH};
use crate::crl::{Crl, is_revoked};
use crate::policy::{Role, path_issues};
use crate::sig::POLICY_ALGORITHMS;

/// Which extended key usage the end-entity certificate must allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequiredEku {
    /// No requirement.
    Any,
    /// id-kp-serverAuth, if the certificate has an extendedKeyUsage extension.
    ServerAuth,
    /// id-kp-clientAuth, if the certificate has an extendedKeyUsage extension.
    ClientAuth,
}

/// What to do when no CRL covers a certificate of the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationPolicy {
    /// Check the certificates whose issuer published a CRL; accept the others.
    IfCrlAvailable,
    /// Every certificate of the path must be covered by a CRL of its issuer.
    Required,
}

/// Inputs to [`verify_chain`] besides the certificates. The validation time is an
/// argument: the core reads no clock.
#[non_exhaustive]
#[derive(Debug, Clone)]
pub struct ChainOptions {
    /// Validation time, Unix seconds.
    pub time_unix: i64,
    /// CRLs to check the path against (signature, cRLSign and freshness are verified).
    pub crls: Vec<Crl>,
    /// Policy for certificates that no CRL covers. Under [`RevocationPolicy::Required`]
    /// with no CRL at all, a path that is otherwise valid is refused
    /// ([`Error::UnknownRevocationStatus`]): revocation is never skipped.
    pub revocation: RevocationPolicy,
    /// Extended key usage the end-entity certificate must allow.
    pub required_eku: RequiredEku,
    /// Maximum number of intermediate CA certificates in the path, self-issued ones not
    /// counted (rustls-webpki never builds more than 6).
    pub max_intermediates: usize,
    /// Work budget: candidate paths (each reaching a trust anchor) examined before giving
    /// up. rustls-webpki also caps signature checks (100) and path-building steps.
    pub max_candidate_paths: usize,
}

impl ChainOptions {
    /// Defaults at `time_unix`: no CRLs, any EKU, up to 6 intermediates, 32 candidate paths.
    pub fn new(time_unix: i64) -> Self {
        Self {
            time_unix,
            crls: Vec::new(),
            revocation: RevocationPolicy::IfCrlAvailable,
            required_eku: RequiredEku::Any,
            max_intermediates: 6,
            max_candidate_paths: 32,
        }
    }

    /// The same options with these CRLs.
    pub fn with_crls(mut self, crls: Vec<Crl>) -> Self {
        self.crls = crls;
        self
    }

    /// The same options with this EKU requirement.
    pub fn with_required_eku(mut self, eku: RequiredEku) -> Self {
        self.required_eku = eku;
        self
    }
}

/// A validated path: leaf first, trust anchor last.
#[derive(Debug, Clone)]
pub struct VerifiedChain {
    path: Vec<Certificate>,
}

impl VerifiedChain {
    /// Leaf, intermediates (issuer order), trust anchor.
    pub fn certificates(&self) -> &[Certificate] {
        &self.path
    }

    /// The end-entity certificate.
    pub fn leaf(&self) -> &Certificate {
        // Invariant: the path always holds the leaf and the anchor.
        &self.path[0]
    }

    /// The trust anchor the path ends in.
    pub fn anchor(&self) -> &Certificate {
        &self.path[self.path.len() - 1]
    }
}

struct AnyEku;

impl ExtendedKeyUsageValidator for AnyEku {
    fn validate(&self, _iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        Ok(())
    }
}

fn unix_time(t: i64) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(t).unwrap_or(0)))
}

fn webpki_time(t: UnixTime) -> i64 {
    i64::try_from(t.as_secs()).unwrap_or(i64::MAX)
}

/// Validates `leaf` up to one of `trust_anchors`, using `intermediates` as candidates in
/// any order, under `opts`. The error names the reason of the failure.
///
/// ```
/// use ssr_pki::{Certificate, ChainOptions, Crl, Error, verify_chain};
/// use ssr_testkit::pki::{KeyKind, LEAF_SERIAL, TestPki};
///
/// let pki = TestPki::new(KeyKind::EcdsaP256, "Doc");
/// let leaf = Certificate::from_pem(&pki.leaf_pem)?;
/// let ica = Certificate::from_pem(&pki.intermediate_pem)?;
/// let root = Certificate::from_pem(&pki.root_pem)?;
/// let now = leaf.not_before() + 3600; // the caller's clock, never read here
///
/// let chain = verify_chain(&leaf, &[ica.clone()], &[root.clone()], &ChainOptions::new(now))?;
/// ssr_pki::check_peer_identity(chain.leaf(), &pki.leaf_cn)?;
///
/// let crl = Crl::from_pem(&pki.intermediate_crl(&[LEAF_SERIAL]))?;
/// let opts = ChainOptions::new(now).with_crls(vec![crl]);
/// assert!(matches!(
///     verify_chain(&leaf, &[ica], &[root], &opts),
///     Err(Error::Revoked { .. })
/// ));
/// # Ok::<(), ssr_pki::Error>(())
/// ```
pub fn verify_chain(
    leaf: &Certificate,
    intermediates: &[Certificate],
    trust_anchors: &[Certificate],
    opts: &ChainOptions,
) -> Result<VerifiedChain, Error> {
    let anchor_ders: Vec<CertificateDer<'_>> = trust_anchors
        .iter()
        .map(|c| CertificateDer::from(c.der()))
        .collect();
    // An anchor webpki cannot use (malformed SPKI, ...) is skipped, not fatal: one bad
    // root in a store must not stop validation against the others.
    let (anchors, anchor_index): (Vec<TrustAnchor<'_>>, Vec<usize>) = anchor_ders
        .iter()
        .enumerate()
        .filter_map(|(i, der)| webpki::anchor_from_trusted_cert(der).ok().map(|a| (a, i)))
        .unzip();
    let inter_ders: Vec<CertificateDer<'_>> = intermediates
        .iter()
        .map(|c| CertificateDer::from(c.der()))
        .collect();
    let leaf_der = CertificateDer::from(leaf.der());
    let ee = webpki::EndEntityCert::try_from(&leaf_der)
        .map_err(|e| map_webpki(e, leaf, intermediates, opts))?;

    let crl_refs: Vec<&webpki::CertRevocationList<'_>> =
        opts.crls.iter().map(|c| c.webpki()).collect();
    let revocation = webpki::RevocationOptionsBuilder::new(&crl_refs)
        .ok()
        .map(|b| {
            b.with_depth(webpki::RevocationCheckDepth::Chain)
                .with_status_policy(match opts.revocation {
                    RevocationPolicy::IfCrlAvailable => webpki::UnknownStatusPolicy::Allow,
                    RevocationPolicy::Required => webpki::UnknownStatusPolicy::Deny,
                })
                .with_expiration_policy(webpki::ExpirationPolicy::Enforce)
                .build()
        });

    let candidates = Cell::new(0usize);
    let rejected: RefCell<Option<Error>> = RefCell::new(None);
    let chosen: RefCell<Vec<Certificate>> = RefCell::new(Vec::new());
    let check_path = |path: &webpki::VerifiedPath<'_>| -> Result<(), webpki::Error> {
        candidates.set(candidates.get() + 1);
        if candidates.get() > opts.max_candidate_paths {
            rejected.replace(Some(Error::BudgetExceeded {
                what: "candidate paths",
            }));
            return Err(webpki::Error::MaximumPathBuildCallsExceeded);
        }
        let mut certs: Vec<&Certificate> = vec![leaf];
        for cert in path.intermediate_certificates() {
            let der = cert.der();
            match intermediates.iter().find(|c| c.der() == der.as_ref()) {
                Some(c) => certs.push(c),
                None => return Err(webpki::Error::UnknownIssuer),
            }
        }
        // Self-issued intermediates (key rollover) do not count, as for pathLenConstraint.
        let used = certs[1..].iter().filter(|c| !c.is_self_issued()).count();
        if used > opts.max_intermediates {
            remember(
                &rejected,
                Error::MaxDepthExceeded {
                    max: opts.max_intermediates,
                },
            );
            return Err(webpki::Error::MaximumPathDepthExceeded);
        }
        let Some(anchor) = anchors
            .iter()
            .position(|a| std::ptr::eq(a, path.anchor()))
            .and_then(|i| anchor_index.get(i))
            .and_then(|&i| trust_anchors.get(i))
        else {
            return Err(webpki::Error::UnknownIssuer);
        };
        certs.push(anchor);
        if let Err(e) = check_candidate(&certs, opts) {
            remember(&rejected, e);
            return Err(webpki::Error::UnknownIssuer);
        }
        chosen.replace(certs.into_iter().cloned().collect());
        Ok(())
    };

    let result = match opts.required_eku {
        RequiredEku::Any => ee.verify_for_usage(
            POLICY_ALGORITHMS,
            &anchors,
            &inter_ders,
            unix_time(opts.time_unix),
            AnyEku,
            revocation,
            Some(&check_path),
        ),
        RequiredEku::ServerAuth | RequiredEku::ClientAuth => {
            let usage = if opts.required_eku == RequiredEku::ServerAuth {
                webpki::KeyUsage::server_auth()
            } else {
                webpki::KeyUsage::client_auth()
            };
            ee.verify_for_usage(
                POLICY_ALGORITHMS,
                &anchors,
                &inter_ders,
                unix_time(opts.time_unix),
                usage,
                revocation,
                Some(&check_path),
            )
        }
    };
    match result {
        // webpki checks revocation only when it is given CRLs: with none held, the
        // `Required` policy cannot be met (the CRL manager has not fetched any yet, or
        // the list was lost), and that must not pass as "not revoked".
        Ok(_) if opts.crls.is_empty() && opts.revocation == RevocationPolicy::Required => {
            Err(Error::UnknownRevocationStatus)
        }
        Ok(_) => Ok(VerifiedChain {
            path: chosen.into_inner(),
        }),
        Err(e) => Err(match rejected.into_inner() {
            Some(budget @ Error::BudgetExceeded { .. }) => budget,
            // A path reached an anchor but failed our own checks: that is the best reason
            // unless webpki hit a harder stop afterwards.
            Some(ours) if !is_hard_stop(&e) => ours,
            _ => map_webpki(e, leaf, intermediates, opts),
        }),
    }
}

/// Our checks on a complete candidate path (leaf first, anchor last), where webpki is
/// silent: per-certificate structure and validity (the anchor included), EKU chaining
/// through the CAs, and, for every CRL issued by a CA of the path, the CA's cRLSign and
/// the CRL's thisUpdate.
fn check_candidate(path: &[&Certificate], opts: &ChainOptions) -> Result<(), Error> {
    let last = path.len() - 1;
    for (i, cert) in path.iter().enumerate() {
        let role = match i {
            0 => Role::Leaf,
            i if i == last => Role::Root,
            _ => Role::Intermediate,
        };
        if let Some(kind) = path_issues(cert, role, opts.time_unix).into_iter().next() {
            return Err(Error::PathCertificate {
                subject: cert.subject(),
                issue: crate::Issue {
                    subject: cert.subject(),
                    kind,
                },
            });
        }
        if i > 0 && i < last && !eku_allows(cert, opts.required_eku) {
            return Err(Error::RequiredEkuNotFound {
                required: eku_name(opts.required_eku),
            });
        }
        if i > 0 {
            for crl in opts.crls.iter().filter(|c| c.issued_by_name_of(cert)) {
                crl.check_issuer_may_sign(cert)?;
                // webpki checks nextUpdate only; a CRL from the future is no evidence.
                if crl.this_update() > opts.time_unix {
                    return Err(Error::CrlNotYetValid {
                        this_update: crl.this_update(),
                        now: opts.time_unix,
                    });
                }
            }
        }
    }
    Ok(())
}

/// EKU chaining (as browsers and pyca do): a CA with an extendedKeyUsage extension must
/// allow the purpose asked for (any TLS purpose when none is).
fn eku_allows(cert: &Certificate, required: RequiredEku) -> bool {
    let Some(purposes) = cert.extended_key_usage() else {
        return true;
    };
    purposes.iter().any(|p| {
        *p == OID_ANY_EKU
            || match required {
                RequiredEku::ServerAuth => *p == OID_KP_SERVER_AUTH,
                RequiredEku::ClientAuth => *p == OID_KP_CLIENT_AUTH,
                RequiredEku::Any => *p == OID_KP_SERVER_AUTH || *p == OID_KP_CLIENT_AUTH,
            }
    })
}

fn eku_name(eku: RequiredEku) -> &'static str {
    match eku {
        RequiredEku::ServerAuth => "serverAuth",
        RequiredEku::ClientAuth => "clientAuth",
        RequiredEku::Any => "serverAuth or clientAuth",
    }
}

/// Keeps the first rejection reason (the most direct path's).
fn remember(slot: &RefCell<Option<Error>>, err: Error) {
    let mut slot = slot.borrow_mut();
    if slot.is_none() {
        *slot = Some(err);
    }
}

fn is_hard_stop(e: &webpki::Error) -> bool {
    matches!(
        e,
        webpki::Error::CertRevoked
            | webpki::Error::MaximumSignatureChecksExceeded
            | webpki::Error::MaximumPathBuildCallsExceeded
    )
}

fn map_webpki(
    e: webpki::Error,
    leaf: &Certificate,
    intermediates: &[Certificate],
    opts: &ChainOptions,
) -> Error {
    use webpki::Error as W;
    match e {
        W::UnknownIssuer => Error::UnknownIssuer,
        W::CertExpired { time, not_after } => Error::Expired {
            not_after: webpki_time(not_after),
            now: webpki_time(time),
        },
        W::CertNotValidYet { time, not_before } => Error::NotYetValid {
            not_before: webpki_time(not_before),
            now: webpki_time(time),
        },
        W::CertRevoked => {
            let found = std::iter::once(leaf)
                .chain(intermediates)
                .find_map(|c| is_revoked(c, &opts.crls));
            match found {
                Some(r) => Error::Revoked {
                    serial_hex: r.entry.serial_hex,
                    issuer: r.crl_issuer,
                },
                None => Error::Revoked {
                    serial_hex: "(unknown)".to_owned(),
                    issuer: String::new(),
                },
            }
        }
        W::UnknownRevocationStatus => Error::UnknownRevocationStatus,
        W::CrlExpired { time, next_update } => Error::CrlExpired {
            next_update: webpki_time(next_update),
            now: webpki_time(time),
        },
        W::InvalidCrlSignatureForPublicKey => Error::CrlBadSignature,
        W::IssuerNotCrlSigner => Error::IssuerNotCrlSigner {
            issuer: "a CA of the path".to_owned(),
        },
        W::InvalidSignatureForPublicKey => Error::BadSignature,
        W::UnsupportedSignatureAlgorithmContext(_)
        | W::UnsupportedSignatureAlgorithmForPublicKeyContext(_)
        | W::UnsupportedCrlSignatureAlgorithmContext(_)
        | W::UnsupportedCrlSignatureAlgorithmForPublicKeyContext(_) => {
            Error::UnsupportedSignatureAlgorithm {
                algorithm: format!("{e:?}"),
            }
        }
        W::PathLenConstraintViolated => Error::PathLenConstraintViolated,
        W::CaUsedAsEndEntity => Error::CaUsedAsEndEntity,
        W::EndEntityUsedAsCa => Error::EndEntityUsedAsCa,
        W::RequiredEkuNotFoundContext(_) => Error::RequiredEkuNotFound {
            required: eku_name(opts.required_eku),
        },
        W::MaximumSignatureChecksExceeded => Error::BudgetExceeded {
            what: "signature checks",
        },
        W::MaximumPathBuildCallsExceeded => Error::BudgetExceeded {
            what: "path-building steps",
        },
        W::MaximumNameConstraintComparisonsExceeded => Error::BudgetExceeded {
            what: "name-constraint comparisons",
        },
        W::MaximumPathDepthExceeded => Error::MaxDepthExceeded {
            max: opts.max_intermediates,
        },
        other => Error::PathInvalid {
            reason: format!("{other:?}"),
        },
    }
}

/// Checks that the peer's certificate names the configured peer: `expected` (the router
/// UUID or the `peering-common-name`) must equal the subject commonName or a
/// subjectAltName dNSName / URI (`urn:uuid:` prefix allowed), ASCII case-insensitively.
///
/// Call it on the leaf of a [`VerifiedChain`]: identity means nothing without a path.
pub fn check_peer_identity(cert: &Certificate, expected: &str) -> Result<(), Error> {
    let mut found: Vec<String> = cert.subject_cn().into_iter().collect();
    found.extend(cert.san_dns_names());
    found.extend(cert.san_uris());
    let matches = |name: &String| {
        let name = name.strip_prefix("urn:uuid:").unwrap_or(name);
        !expected.is_empty() && name.eq_ignore_ascii_case(expected)
    };
    if found.iter().any(matches) {
        Ok(())
    } else {
        Err(Error::PeerIdentityMismatch {
            expected: expected.to_owned(),
            found,
        })
    }
}
