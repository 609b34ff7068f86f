//! Audit events: one JSON object per line.
//!
//! ```json
//! {"time":1700000000,"event":"token-used","router":"r1","jti":"…","detail":"…"}
//! ```
//! `event` is one of `token-created`, `token-used`, `token-rejected`, `refused`
//! (any other refusal: PSK, key proof, protocol, untrusted conductor),
//! `legacy-refused`, `onboarded`. No secrets are ever written.

use serde::Serialize;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum AuditKind {
    /// A token was created on the conductor.
    TokenCreated,
    /// A token was accepted (and consumed).
    TokenUsed,
    /// A token was rejected (malformed, altered, expired, reused, unknown router).
    TokenRejected,
    /// Any other refusal by either side.
    Refused,
    /// A legacy asset-id onboarding attempt was refused.
    LegacyRefused,
    /// A router completed onboarding.
    Onboarded,
}

/// One audit event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEvent {
    /// Unix seconds.
    pub time: u64,
    /// What happened.
    pub event: AuditKind,
    /// Which side logged it: "conductor" or "router".
    pub side: &'static str,
    /// The router concerned, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub router: Option<String>,
    /// The token id, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// One line of detail (an error message; never a secret).
    pub detail: String,
}

impl AuditEvent {
    /// The event as one JSON line (with the trailing newline).
    pub fn to_json_line(&self) -> String {
        let mut s = serde_json::to_string(self).unwrap_or_else(|_| "{}".into());
        s.push('\n');
        s
    }
}
