//! SVR metadata codec.
//!
//! # Wire format (version 1)
//!
//! ```text
//! cookie u64 BE = 0x4C48DBC6DDF6670C
//! version:4 | header_length:12   (u16 BE; header_length counts the 12 fixed bytes + header TLVs)
//! payload_length u16 BE          (bytes of payload TLVs following the header)
//! header TLVs  (header_length - 12 bytes)
//! payload TLVs (payload_length bytes)
//! each TLV: type u16 BE | length u16 BE | value
//! ```
//!
//! Details the product documents leave open, fixed here: the metadata is exactly
//! `header_length + payload_length` bytes (anything after is rejected, the caller
//! splits metadata from the packet payload beforehand); a TLV must end inside its
//! section; zero TLVs are allowed; type values are not restricted (unknown types are
//! carried, not interpreted), but a type may appear at most once per section.

use crate::Error;

/// The SVR metadata cookie.
pub const COOKIE: u64 = 0x4C48_DBC6_DDF6_670C;
/// Supported version.
pub const VERSION: u8 = 1;
/// Fixed header bytes.
pub const FIXED_LEN: usize = 12;
/// Largest header length (12 bits).
pub const MAX_HEADER_LEN: usize = 0x0FFF;

/// TLV type: metadata key index (u32 BE) of the key that protects the encrypted TLVs.
pub const TLV_METADATA_KEY_INDEX: u16 = 0x0100;
/// TLV type: payload key of the session, sealed under the metadata key.
pub const TLV_SEALED_PAYLOAD_KEY: u16 = 0x0101;
/// TLV type: session identifier (16 bytes).
pub const TLV_SESSION_ID: u16 = 0x0102;

const W: &str = "svr metadata";

/// One TLV, borrowed from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// Type.
    pub typ: u16,
    /// Value.
    pub value: &'a [u8],
}

/// Parsed metadata (borrowing the input).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metadata<'a> {
    /// Header TLVs.
    pub header: Vec<Tlv<'a>>,
    /// Payload TLVs.
    pub payload: Vec<Tlv<'a>>,
}

pub(crate) struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Self {
        Self { b }
    }
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.b.len() < n {
            return None;
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Some(h)
    }
    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take(1).and_then(|s| s.first().copied())
    }
    pub(crate) fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    pub(crate) fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.b.is_empty()
    }
}

fn parse_section(b: &[u8]) -> Result<Vec<Tlv<'_>>, Error> {
    let mut r = Reader::new(b);
    let mut out: Vec<Tlv<'_>> = Vec::new();
    while !r.is_empty() {
        let typ = r.u16().ok_or(Error::Malformed {
            what: W,
            reason: "truncated TLV header",
        })?;
        let len = r.u16().ok_or(Error::Malformed {
            what: W,
            reason: "truncated TLV header",
        })?;
        let value = r.take(usize::from(len)).ok_or(Error::Malformed {
            what: W,
            reason: "TLV overruns its section",
        })?;
        out.push(Tlv { typ, value });
    }
    if has_duplicate_type(&out) {
        return Err(Error::Malformed {
            what: W,
            reason: "duplicate TLV type",
        });
    }
    Ok(out)
}

/// Does a type repeat? Sorts a copy of the types: O(n log n) on unauthenticated input
/// (a 64 KiB section holds up to 16 383 TLVs; pairwise comparison was ~134M steps).
fn has_duplicate_type(tlvs: &[Tlv<'_>]) -> bool {
    let mut types: Vec<u16> = tlvs.iter().map(|t| t.typ).collect();
    types.sort_unstable();
    types.windows(2).any(|w| w[0] == w[1])
}

impl<'a> Metadata<'a> {
    /// Strict parser.
    pub fn parse(b: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader::new(b);
        let cookie = r.u64().ok_or(Error::BadLength {
            what: W,
            len: b.len(),
        })?;
        if cookie != COOKIE {
            return Err(Error::Malformed {
                what: W,
                reason: "bad cookie",
            });
        }
        let vh = r.u16().ok_or(Error::BadLength {
            what: W,
            len: b.len(),
        })?;
        let plen = usize::from(r.u16().ok_or(Error::BadLength {
            what: W,
            len: b.len(),
        })?);
        if (vh >> 12) as u8 != VERSION {
            return Err(Error::Malformed {
                what: W,
                reason: "unknown version",
            });
        }
        let hlen = usize::from(vh & 0x0FFF);
        if hlen < FIXED_LEN {
            return Err(Error::Malformed {
                what: W,
                reason: "header length below 12",
            });
        }
        if b.len() != hlen + plen {
            return Err(Error::BadLength {
                what: W,
                len: b.len(),
            });
        }
        let htlv = r.take(hlen - FIXED_LEN).ok_or(Error::BadLength {
            what: W,
            len: b.len(),
        })?;
        let ptlv = r.take(plen).ok_or(Error::BadLength {
            what: W,
            len: b.len(),
        })?;
        Ok(Self {
            header: parse_section(htlv)?,
            payload: parse_section(ptlv)?,
        })
    }

    /// Encoded length.
    pub fn encoded_len(&self) -> usize {
        FIXED_LEN + section_len(&self.header) + section_len(&self.payload)
    }

    /// Encodes into `out`, returning the length. Fails when a section does not fit its
    /// length field, a value exceeds 65535 bytes or a type repeats.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, Error> {
        let hlen = FIXED_LEN + section_len(&self.header);
        let plen = section_len(&self.payload);
        if hlen > MAX_HEADER_LEN || plen > usize::from(u16::MAX) {
            return Err(Error::BadLength {
                what: W,
                len: hlen.max(plen),
            });
        }
        for sec in [&self.header, &self.payload] {
            if let Some(t) = sec.iter().find(|t| t.value.len() > usize::from(u16::MAX)) {
                return Err(Error::BadLength {
                    what: "tlv value",
                    len: t.value.len(),
                });
            }
            if has_duplicate_type(sec) {
                return Err(Error::Malformed {
                    what: W,
                    reason: "duplicate TLV type",
                });
            }
        }
        let n = hlen + plen;
        if out.len() < n {
            return Err(Error::BufferTooSmall {
                needed: n,
                have: out.len(),
            });
        }
        out[..8].copy_from_slice(&COOKIE.to_be_bytes());
        out[8..10].copy_from_slice(&((u16::from(VERSION) << 12) | hlen as u16).to_be_bytes());
        out[10..12].copy_from_slice(&(plen as u16).to_be_bytes());
        let mut off = FIXED_LEN;
        for t in self.header.iter().chain(self.payload.iter()) {
            out[off..off + 2].copy_from_slice(&t.typ.to_be_bytes());
            out[off + 2..off + 4].copy_from_slice(&(t.value.len() as u16).to_be_bytes());
            out[off + 4..off + 4 + t.value.len()].copy_from_slice(t.value);
            off += 4 + t.value.len();
        }
        Ok(n)
    }

    /// First header or payload TLV of type `typ`.
    pub fn get(&self, typ: u16) -> Option<&'a [u8]> {
        self.header
            .iter()
            .chain(self.payload.iter())
            .find(|t| t.typ == typ)
            .map(|t| t.value)
    }
}

fn section_len(s: &[Tlv<'_>]) -> usize {
    s.iter().map(|t| 4 + t.value.len()).sum()
}

/// The most expensive metadata for the parser (not a stable API; shared by the unit
/// test and the criterion bench): 65 535 + 4 095 bytes, a full header section and a full
/// payload section of zero-length TLVs with distinct types (16 383 in the payload: the
/// duplicate check must look at all of them). With `duplicate`, the payload's last TLV
/// repeats its first type.
#[doc(hidden)]
pub fn worst_case_metadata(duplicate: bool) -> Vec<u8> {
    let hdr_tlvs = (MAX_HEADER_LEN - FIXED_LEN) / 4; // 1020, 3 bytes left
    let hlen = FIXED_LEN + hdr_tlvs * 4 + 3;
    let plen = usize::from(u16::MAX);
    let mut v = COOKIE.to_be_bytes().to_vec();
    v.extend_from_slice(&((u16::from(VERSION) << 12) | hlen as u16).to_be_bytes());
    v.extend_from_slice(&(plen as u16).to_be_bytes());
    let tlv = |v: &mut Vec<u8>, typ: u16, len: usize| {
        v.extend_from_slice(&typ.to_be_bytes());
        v.extend_from_slice(&(len as u16).to_be_bytes());
        v.extend(core::iter::repeat_n(0u8, len));
    };
    for t in 0..hdr_tlvs - 1 {
        tlv(&mut v, (t as u16).wrapping_mul(7919), 0);
    }
    tlv(&mut v, 0xFFFF, 3);
    let n = (plen - 3) / 4; // 16 383 TLVs: 16 382 empty, the last one 3 bytes long
    for t in 0..n - 1 {
        // Descending types: the worst order for an insertion-style check.
        tlv(&mut v, u16::MAX - t as u16, 0);
    }
    let last = if duplicate { u16::MAX } else { 0 };
    tlv(&mut v, last, 3);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn worst_case_64k_metadata_parses_and_a_late_duplicate_is_found() {
        let ok = worst_case_metadata(false);
        assert_eq!(ok.len(), MAX_HEADER_LEN + usize::from(u16::MAX));
        let m = Metadata::parse(&ok).unwrap();
        assert_eq!(m.payload.len(), 16_383);
        assert_eq!(m.header.len(), 1020);
        let dup = worst_case_metadata(true);
        assert_eq!(
            Metadata::parse(&dup).err(),
            Some(Error::Malformed {
                what: W,
                reason: "duplicate TLV type"
            })
        );
    }

    #[test]
    fn round_trip_and_strictness() {
        let m = Metadata {
            header: vec![Tlv {
                typ: TLV_METADATA_KEY_INDEX,
                value: &[0, 0, 0, 7],
            }],
            payload: vec![Tlv {
                typ: TLV_SESSION_ID,
                value: &[9; 16],
            }],
        };
        let mut buf = [0u8; 64];
        let n = m.encode(&mut buf).unwrap();
        assert_eq!(n, 12 + 8 + 20);
        assert_eq!(&buf[..8], &[0x4C, 0x48, 0xDB, 0xC6, 0xDD, 0xF6, 0x67, 0x0C]);
        assert_eq!(Metadata::parse(&buf[..n]).unwrap(), m);
        assert!(Metadata::parse(&buf[..n + 1]).is_err(), "trailing byte");
        assert!(Metadata::parse(&buf[..n - 1]).is_err(), "truncated");
        let mut v2 = buf;
        v2[8] = (v2[8] & 0x0F) | 0x20;
        assert_eq!(
            Metadata::parse(&v2[..n]),
            Err(Error::Malformed {
                what: W,
                reason: "unknown version"
            })
        );
        let mut bad = buf;
        bad[0] ^= 1;
        assert!(Metadata::parse(&bad[..n]).is_err());
        // A header TLV that overruns into the payload section.
        let mut over = buf;
        over[12 + 3] = 9;
        assert!(Metadata::parse(&over[..n]).is_err());
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Metadata::parse(&b);
        }

        #[test]
        fn encode_parse_identity(
            h in proptest::collection::btree_map(any::<u16>(), proptest::collection::vec(any::<u8>(), 0..40), 0..5),
            p in proptest::collection::btree_map(any::<u16>(), proptest::collection::vec(any::<u8>(), 0..40), 0..5),
        ) {
            let m = Metadata {
                header: h.iter().map(|(t, v)| Tlv { typ: *t, value: v }).collect(),
                payload: p.iter().map(|(t, v)| Tlv { typ: *t, value: v }).collect(),
            };
            let mut buf = vec![0u8; m.encoded_len()];
            let n = m.encode(&mut buf).unwrap();
            prop_assert_eq!(Metadata::parse(&buf[..n]).unwrap(), m);
        }
    }
}
