//! PEM bundles (RFC 7468): split a text into encapsulated blocks, decode each strictly.
//!
//! Text outside the blocks (explanatory text, as `openssl x509 -text` writes) is ignored, as
//! RFC 7468 section 2 allows. Inside, the strict grammar applies: matching BEGIN/END
//! labels, no nesting, no headers, canonical base64 in 64-column lines. Blocks whose label
//! names a private key are reported by label only: their contents are never decoded.

use crate::Error;
use crate::cert::Certificate;
use crate::crl::Crl;

/// The label of a certificate block.
pub const LABEL_CERTIFICATE: &str = "CERTIFICATE";
/// The label of a CRL block.
pub const LABEL_CRL: &str = "X509 CRL";

/// One block of a PEM bundle.
#[non_exhaustive]
#[derive(Debug, Clone)]
pub enum PemItem {
    /// A `CERTIFICATE` block, parsed.
    Certificate(Certificate),
    /// An `X509 CRL` block, parsed.
    Crl(Crl),
    /// A block whose label names a private key (`PRIVATE KEY`, `EC PRIVATE KEY`,
    /// `ENCRYPTED PRIVATE KEY`, ...). Its contents are not decoded and not kept.
    PrivateKey {
        /// The block's label.
        label: String,
    },
    /// Any other well-formed block (e.g. `PUBLIC KEY`, `CERTIFICATE REQUEST`).
    Other {
        /// The block's label.
        label: String,
    },
}

impl PemItem {
    /// The block's PEM label.
    pub fn label(&self) -> &str {
        match self {
            Self::Certificate(_) => LABEL_CERTIFICATE,
            Self::Crl(_) => LABEL_CRL,
            Self::PrivateKey { label } | Self::Other { label } => label,
        }
    }
}

/// True for labels that carry private key material.
fn is_private_key_label(label: &str) -> bool {
    label.contains("PRIVATE KEY")
}

/// RFC 7468 `label`: printable ASCII except '-', with single inner hyphens or spaces.
fn valid_label(label: &str) -> bool {
    !label.starts_with([' ', '-'])
        && !label.ends_with([' ', '-'])
        && !label.contains("  ")
        && !label.contains("--")
        && label
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) || b == b' ')
}

struct Block<'t> {
    label: &'t str,
    begin_line: usize,
    text: String,
}

fn boundary<'l>(line: &'l str, kind: &str) -> Option<&'l str> {
    line.strip_prefix("-----")?
        .strip_prefix(kind)?
        .strip_prefix(' ')
        .and_then(|rest| rest.strip_suffix("-----"))
        .or_else(|| {
            // "-----BEGIN -----" (empty label) is legal per the ABNF.
            line.strip_prefix("-----")?
                .strip_prefix(kind)?
                .strip_suffix("-----")
                .filter(|l| l.is_empty())
        })
}

fn split_blocks(text: &str) -> Result<Vec<Block<'_>>, Error> {
    let mut blocks = Vec::new();
    let mut open: Option<Block<'_>> = None;
    for (idx, raw) in text.lines().enumerate() {
        let line_no = idx + 1;
        let line = raw.trim_end_matches([' ', '\t', '\r']);
        let pem_err = |reason| Error::Pem {
            line: line_no,
            reason,
        };
        if let Some(label) = boundary(line, "BEGIN") {
            if open.is_some() {
                return Err(pem_err("BEGIN inside an unterminated block"));
            }
            if !valid_label(label) {
                return Err(pem_err("invalid label"));
            }
            open = Some(Block {
                label,
                begin_line: line_no,
                text: format!("{line}\n"),
            });
        } else if let Some(label) = boundary(line, "END") {
            let Some(mut block) = open.take() else {
                return Err(pem_err("END without BEGIN"));
            };
            if label != block.label {
                return Err(pem_err("END label differs from BEGIN label"));
            }
            block.text.push_str(line);
            block.text.push('\n');
            blocks.push(block);
        } else if let Some(block) = open.as_mut() {
            if line.starts_with("-----") {
                return Err(pem_err("malformed encapsulation boundary"));
            }
            block.text.push_str(line);
            block.text.push('\n');
        } else if line.starts_with("-----BEGIN") || line.starts_with("-----END") {
            return Err(pem_err("malformed encapsulation boundary"));
        }
    }
    if let Some(block) = open {
        return Err(Error::Pem {
            line: block.begin_line,
            reason: "block is never terminated by END",
        });
    }
    Ok(blocks)
}

fn decode_block(block: &Block<'_>) -> Result<PemItem, Error> {
    if is_private_key_label(block.label) {
        return Ok(PemItem::PrivateKey {
            label: block.label.to_owned(),
        });
    }
    let (_, der) = pem_rfc7468::decode_vec(block.text.as_bytes()).map_err(|_| Error::Pem {
        line: block.begin_line,
        reason: "block contents are not strict RFC 7468 base64",
    })?;
    Ok(match block.label {
        LABEL_CERTIFICATE => PemItem::Certificate(Certificate::from_der(&der)?),
        LABEL_CRL => PemItem::Crl(Crl::from_der(&der)?),
        other => PemItem::Other {
            label: other.to_owned(),
        },
    })
}

/// Parses every PEM block of `text`, in order.
///
/// Certificates and CRLs are parsed (an unparsable one fails the whole bundle); private
/// key blocks are reported by label without decoding. A text with no block is an error.
///
/// ```
/// let err = ssr_pki::parse_pem_bundle("no pem here").unwrap_err();
/// assert!(matches!(err, ssr_pki::Error::Pem { .. }));
/// ```
pub fn parse_pem_bundle(text: &str) -> Result<Vec<PemItem>, Error> {
    let blocks = split_blocks(text)?;
    if blocks.is_empty() {
        return Err(Error::Pem {
            line: 1,
            reason: "no PEM block found",
        });
    }
    blocks.iter().map(decode_block).collect()
}

/// Parses a text that must hold exactly one block labelled `expected`.
pub(crate) fn parse_single(text: &str, expected: &'static str) -> Result<PemItem, Error> {
    let blocks = split_blocks(text)?;
    let [block] = blocks.as_slice() else {
        return Err(Error::PemCount {
            found: blocks.len(),
        });
    };
    if block.label != expected {
        return Err(Error::PemLabel {
            expected,
            found: block.label.to_owned(),
        });
    }
    decode_block(block)
}

/// Encodes DER as a PEM block (64-column base64, LF line endings).
pub(crate) fn encode(label: &str, der: &[u8]) -> String {
    // Only fails on an invalid label; ours are constants.
    pem_rfc7468::encode_string(label, pem_rfc7468::LineEnding::LF, der).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_rfc7468() {
        for ok in ["CERTIFICATE", "X509 CRL", "EC PRIVATE KEY", "A-B"] {
            assert!(valid_label(ok), "{ok}");
        }
        for bad in [" X", "X ", "A  B", "A--B", "-A", "CAFÉ", "A\tB"] {
            assert!(!valid_label(bad), "{bad}");
        }
        assert!(is_private_key_label("ENCRYPTED PRIVATE KEY"));
        assert!(!is_private_key_label("PUBLIC KEY"));
    }

    #[test]
    fn encode_then_parse_is_identity() {
        let text = encode("PUBLIC KEY", &[1, 2, 3, 4, 5]);
        let items = parse_pem_bundle(&text).expect("parses");
        assert!(matches!(&items[..], [PemItem::Other { label }] if label == "PUBLIC KEY"));
    }
}
