//! Strict base64url (no padding): the only encoding accepted on the wire.

use base64ct::{Base64UrlUnpadded, Encoding};

/// Encodes without padding.
pub(crate) fn encode(bytes: &[u8]) -> String {
    Base64UrlUnpadded::encode_string(bytes)
}

/// Decodes, rejecting padding, foreign characters and non-canonical trailing bits
/// (re-encoding must give back the input byte for byte).
pub(crate) fn decode(s: &str) -> Option<Vec<u8>> {
    let v = Base64UrlUnpadded::decode_vec(s).ok()?;
    if encode(&v) != s {
        return None;
    }
    Some(v)
}

/// Decodes exactly `N` bytes.
pub(crate) fn decode_array<const N: usize>(s: &str) -> Option<[u8; N]> {
    decode(s)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn non_canonical_is_rejected() {
        assert_eq!(super::decode("AA").as_deref(), Some(&[0u8][..]));
        // "AB" decodes to the same byte with a stray low bit set.
        assert_eq!(super::decode("AB"), None);
        assert_eq!(super::decode("AA=="), None);
        assert_eq!(super::decode("A+"), None);
    }
}
