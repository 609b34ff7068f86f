//! Peer certificates validated by ssr-pki (feature `pki`): [`PkiAuthenticator`], the
//! [`PeerAuthenticator`] a router runs with; and [`RouterKeySigner`], the router key
//! (software or, with feature `tpm`, TPM-held) signing this router's key exchange.
//!
//! A peer sends its certificate alone; the chain is completed from the intermediates
//! and trust anchors this router holds (all routers of an authority share one
//! hierarchy, SPEC 3.4) and validated by [`ssr_pki::verify_chain`] at the time the peer
//! state machine gives: signatures under the algorithm policy, validity dates, CA and
//! key-usage roles. With `peer-validation` on (SPEC 3.6, off by default) the CRLs held
//! here are checked too. A certificate that passes must carry a P-256 key, whose
//! signatures then authenticate the key exchange, and a common name, which the peer
//! state machine compares with the configured `peering-common-name`.
//!
//! Every refusal counts in ssr-pki's peer-certificate counters (expired, invalid,
//! revoked; SPEC 3.10): [`PkiAuthenticator::counters`].
//!
//! ```
//! use ssr_svr_crypto::pki::PkiAuthenticator;
//! let auth = PkiAuthenticator::new(Vec::new(), Vec::new()).with_peer_validation(true);
//! assert!(auth.peer_validation());
//! ```

use std::sync::{Mutex, PoisonError};

use p256::ecdsa::VerifyingKey;
use p256::pkcs8::DecodePublicKey;
use ssr_pki::audit::{Counter, Counters};
use ssr_pki::keys::RouterKey;
use ssr_pki::{Certificate, ChainOptions, Crl, KeyAlgorithm, verify_chain};

use crate::Error;
use crate::kex::{AuthenticatedPeer, KexSigner, PeerAuthenticator};

/// Validates peer certificates against this router's trust anchors (and, with
/// `peer-validation`, its CRLs).
#[derive(Debug)]
pub struct PkiAuthenticator {
    anchors: Vec<Certificate>,
    intermediates: Vec<Certificate>,
    crls: Vec<Crl>,
    peer_validation: bool,
    counters: Mutex<Counters>,
}

impl PkiAuthenticator {
    /// Trusts chains ending at one of `anchors`, completed from `intermediates`.
    /// `peer-validation` is off.
    pub fn new(anchors: Vec<Certificate>, intermediates: Vec<Certificate>) -> Self {
        Self {
            anchors,
            intermediates,
            crls: Vec::new(),
            peer_validation: false,
            counters: Mutex::new(Counters::default()),
        }
    }

    /// The same authenticator with `peer-validation` set.
    pub fn with_peer_validation(mut self, on: bool) -> Self {
        self.peer_validation = on;
        self
    }

    /// Whether peer certificates are checked against the CRLs.
    pub fn peer_validation(&self) -> bool {
        self.peer_validation
    }

    /// Replaces the CRLs (what the CRL manager last fetched); used with
    /// `peer-validation` on. A new certificate or CRL calls for peer authentication
    /// again (SPEC 3.8): the peer state machine asks at its next certificate exchange.
    pub fn set_crls(&mut self, crls: Vec<Crl>) {
        self.crls = crls;
    }

    /// The peer-certificate refusals so far.
    pub fn counters(&self) -> Counters {
        self.counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn refuse(&self, err: &ssr_pki::Error) -> Error {
        self.counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .incr(Counter::for_rejection(err, true));
        Error::PeerCertificate {
            reason: err.to_string(),
        }
    }

    fn invalid(&self, reason: &str) -> Error {
        self.counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .incr(Counter::PeerCertificateInvalid);
        Error::PeerCertificate {
            reason: reason.to_owned(),
        }
    }
}

impl PeerAuthenticator for PkiAuthenticator {
    fn authenticate(&self, cert_der: &[u8], now_unix: u64) -> Result<AuthenticatedPeer, Error> {
        let cert = Certificate::from_der(cert_der).map_err(|e| self.refuse(&e))?;
        let now = i64::try_from(now_unix).unwrap_or(i64::MAX);
        let mut opts = ChainOptions::new(now);
        if self.peer_validation {
            opts = opts.with_crls(self.crls.clone());
        }
        verify_chain(&cert, &self.intermediates, &self.anchors, &opts)
            .map_err(|e| self.refuse(&e))?;
        if cert.public_key_algorithm() != KeyAlgorithm::EcP256 {
            return Err(self.invalid("the peer certificate's key is not P-256"));
        }
        let public_key = VerifyingKey::from_public_key_der(&cert.spki_der())
            .map_err(|_| self.invalid("the peer certificate's P-256 key does not decode"))?;
        let common_name = cert
            .subject_cn()
            .ok_or_else(|| self.invalid("the peer certificate has no common name"))?;
        Ok(AuthenticatedPeer {
            common_name,
            public_key,
        })
    }
}

/// The router key (`ssr_pki::keys::RouterKey`: the software key, or with feature `tpm`
/// the TPM-held key store entry `router`) as the signer of this router's key exchange
/// messages: the key that signed the router's CSR and its onboarding proof signs its
/// SVR hellos and replies too.
///
/// ```
/// use std::sync::Arc;
/// use ssr_pki::keys::PrivateKey;
/// use ssr_svr_crypto::kex::KexSigner;
/// use ssr_svr_crypto::pki::RouterKeySigner;
/// let key = PrivateKey::generate(&mut ssr_testkit::TestRng(1));
/// let signer: Arc<dyn KexSigner + Send + Sync> = Arc::new(RouterKeySigner::new(key));
/// assert_eq!(signer.sign_kex(b"hello").unwrap().len(), 64);
/// ```
#[derive(Debug)]
pub struct RouterKeySigner<K>(K);

impl<K: RouterKey> RouterKeySigner<K> {
    /// Signs key exchange messages with `key`.
    pub fn new(key: K) -> Self {
        Self(key)
    }

    /// The router key.
    pub fn key(&self) -> &K {
        &self.0
    }
}

impl<K: RouterKey> KexSigner for RouterKeySigner<K> {
    /// The signature is checked against the key's own public key before it is used
    /// (`ssr_pki::keys::sign_checked`), so a faulty holder is an [`Error::Signer`] here,
    /// not a hello the peer refuses.
    fn sign_kex(&self, msg: &[u8]) -> Result<[u8; 64], Error> {
        let (_, sig) = ssr_pki::keys::sign_checked(&self.0, msg).map_err(|e| Error::Signer {
            reason: format!("{} key: {e}", self.0.holder()),
        })?;
        Ok(sig.to_bytes().into())
    }
}
