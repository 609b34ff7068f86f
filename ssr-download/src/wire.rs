//! The wire formats: the `versions` list and the image manifest (strict JSON).

use std::io::Read;
use std::ops::Range;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Error;

/// The manifest format of SHA-256 chunk digests (no `chunk-hash` member): what every
/// reader of this crate understands.
pub const MANIFEST_FORMAT: u32 = 1;
/// The manifest format that names its chunk hash (`"chunk-hash":"blake3"`).
pub const MANIFEST_FORMAT_CHUNK_HASH: u32 = 2;
/// Smallest chunk size a manifest may declare (4 KiB).
pub const MIN_CHUNK_SIZE: u64 = 4 << 10;
/// Largest chunk size a manifest may declare (64 MiB).
pub const MAX_CHUNK_SIZE: u64 = 64 << 20;
/// Most chunks a manifest may list (bounds the memory a manifest can make us use).
pub const MAX_CHUNKS: usize = 1 << 20;
/// Most entries in a `versions` list.
pub const MAX_VERSIONS: usize = 10_000;
/// Largest `versions` or manifest document accepted, in bytes.
pub const MAX_DOCUMENT: usize = 96 << 20;

/// A SHA-256 digest.
pub type Sha256Digest = [u8; 32];
/// A chunk's digest under its manifest's [`ChunkHash`].
pub type ChunkDigest = [u8; 32];

/// The hash of a manifest's chunk digests. The whole-file digest (`sha256`) is always
/// SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ChunkHash {
    /// SHA-256 (FIPS 180-4), manifest format 1: every reader knows it.
    #[default]
    Sha256,
    /// BLAKE3 with its default 256-bit output, manifest format 2: about four times
    /// SHA-256's speed per core (not a FIPS-approved hash).
    Blake3,
}

impl ChunkHash {
    /// The name in manifests, configuration and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ChunkHash::Sha256 => "sha256",
            ChunkHash::Blake3 => "blake3",
        }
    }

    /// The digest of `data`.
    pub fn digest(self, data: &[u8]) -> ChunkDigest {
        match self {
            ChunkHash::Sha256 => Sha256::digest(data).into(),
            ChunkHash::Blake3 => *blake3::hash(data).as_bytes(),
        }
    }
}

impl std::str::FromStr for ChunkHash {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        [ChunkHash::Sha256, ChunkHash::Blake3]
            .into_iter()
            .find(|h| h.name() == s)
            .ok_or_else(|| {
                Error::MalformedManifest(format!(
                    "chunk-hash {:?}: expected \"sha256\" or \"blake3\"",
                    s.chars().take(20).collect::<String>()
                ))
            })
    }
}

/// Checks a version string: 1-128 characters from `A-Z a-z 0-9 . _ + -`, not starting
/// with `.` (it becomes a path segment and a directory name).
pub fn check_version(version: &str) -> Result<(), Error> {
    let ok = !version.is_empty()
        && version.len() <= 128
        && !version.starts_with('.')
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidVersion(version.chars().take(140).collect()))
    }
}

/// Parses `GET {base}/versions`: a JSON array of version strings, nothing else.
pub fn parse_versions(bytes: &[u8]) -> Result<Vec<String>, Error> {
    if bytes.len() > MAX_DOCUMENT {
        return Err(Error::MalformedVersions("document too large".into()));
    }
    let list: Vec<String> =
        serde_json::from_slice(bytes).map_err(|e| Error::MalformedVersions(e.to_string()))?;
    if list.len() > MAX_VERSIONS {
        return Err(Error::MalformedVersions(format!(
            "{} entries, at most {MAX_VERSIONS}",
            list.len()
        )));
    }
    for v in &list {
        check_version(v).map_err(|e| Error::MalformedVersions(e.to_string()))?;
    }
    Ok(list)
}

/// Encodes a `versions` document.
pub fn versions_json(versions: &[&str]) -> Vec<u8> {
    serde_json::to_vec(versions).unwrap_or_default()
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct ManifestDoc {
    pub(crate) format: u32,
    pub(crate) version: String,
    pub(crate) file: String,
    pub(crate) size: u64,
    pub(crate) sha256: String,
    pub(crate) chunk_size: u64,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_string"
    )]
    pub(crate) chunk_hash: Option<String>,
    pub(crate) chunks: Vec<String>,
}

/// An optional member that, when present, must be a string (`null` is refused, so a
/// manifest has one encoding).
pub(crate) fn present_string<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

/// An image manifest (`GET {base}/images/{version}/manifest.json`), validated.
///
/// ```json
/// {"format":1,"version":"6.3.0","file":"ssr-6.3.0.iso","size":10485760,
///  "sha256":"<64 hex>","chunk-size":4194304,"chunks":["<64 hex>","<64 hex>","<64 hex>"]}
/// ```
///
/// Every chunk is `chunk-size` bytes except the last; `chunks` lists exactly
/// `ceil(size / chunk-size)` SHA-256 digests. Format 2 differs in one member,
/// `"chunk-hash":"blake3"` between `chunk-size` and `chunks`, and its chunk digests
/// are BLAKE3 (format 2 with `"sha256"` is refused: SHA-256 chunks are format 1, so
/// every manifest has one encoding). Two manifests are the same image only when every
/// field is equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    version: String,
    file: String,
    size: u64,
    sha256: Sha256Digest,
    chunk_size: u64,
    chunk_hash: ChunkHash,
    chunks: Vec<ChunkDigest>,
}

fn digest_hex(field: &str, s: &str) -> Result<Sha256Digest, Error> {
    let mut out = [0u8; 32];
    if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(Error::MalformedManifest(format!(
            "{field}: expected 64 lower-case hex digits"
        )));
    }
    hex::decode_to_slice(s, &mut out)
        .map_err(|_| Error::MalformedManifest(format!("{field}: not hex")))?;
    Ok(out)
}

fn check_file_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::MalformedManifest(
            "file: use 1-255 characters from A-Z a-z 0-9 . _ + -, not starting with '.'".into(),
        ))
    }
}

impl Manifest {
    /// Parses and validates a manifest document (strict: unknown or duplicate fields,
    /// another format, trailing bytes, inconsistent sizes are all refused).
    pub fn parse(bytes: &[u8]) -> Result<Manifest, Error> {
        if bytes.len() > MAX_DOCUMENT {
            return Err(Error::MalformedManifest("document too large".into()));
        }
        let doc: ManifestDoc =
            serde_json::from_slice(bytes).map_err(|e| Error::MalformedManifest(e.to_string()))?;
        Manifest::from_doc(doc)
    }

    /// Validates a parsed document.
    pub(crate) fn from_doc(doc: ManifestDoc) -> Result<Manifest, Error> {
        let chunk_hash = match (doc.format, doc.chunk_hash.as_deref()) {
            (MANIFEST_FORMAT, None) => ChunkHash::Sha256,
            (MANIFEST_FORMAT, Some(_)) => {
                return Err(Error::MalformedManifest(format!(
                    "chunk-hash in a format {MANIFEST_FORMAT} manifest (its chunks are SHA-256)"
                )));
            }
            (MANIFEST_FORMAT_CHUNK_HASH, Some(name)) => match name.parse()? {
                ChunkHash::Sha256 => {
                    return Err(Error::MalformedManifest(format!(
                        "chunk-hash \"sha256\" in format {MANIFEST_FORMAT_CHUNK_HASH} (SHA-256 chunks are format {MANIFEST_FORMAT})"
                    )));
                }
                h => h,
            },
            (MANIFEST_FORMAT_CHUNK_HASH, None) => {
                return Err(Error::MalformedManifest(format!(
                    "format {MANIFEST_FORMAT_CHUNK_HASH} without chunk-hash"
                )));
            }
            (f, _) => {
                return Err(Error::MalformedManifest(format!(
                    "format {f} (this reader knows {MANIFEST_FORMAT} and {MANIFEST_FORMAT_CHUNK_HASH})"
                )));
            }
        };
        check_version(&doc.version).map_err(|e| Error::MalformedManifest(e.to_string()))?;
        check_file_name(&doc.file)?;
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&doc.chunk_size) {
            return Err(Error::MalformedManifest(format!(
                "chunk-size {} outside {MIN_CHUNK_SIZE}-{MAX_CHUNK_SIZE}",
                doc.chunk_size
            )));
        }
        if doc.size == 0 {
            return Err(Error::MalformedManifest("size 0".into()));
        }
        let expected = doc.size.div_ceil(doc.chunk_size);
        if expected > MAX_CHUNKS as u64 || doc.chunks.len() as u64 != expected {
            return Err(Error::MalformedManifest(format!(
                "{} chunk digests for {} bytes in chunks of {} (expected {expected}, at most {MAX_CHUNKS})",
                doc.chunks.len(),
                doc.size,
                doc.chunk_size
            )));
        }
        let chunks = doc
            .chunks
            .iter()
            .map(|c| digest_hex("chunks", c))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Manifest {
            sha256: digest_hex("sha256", &doc.sha256)?,
            version: doc.version,
            file: doc.file,
            size: doc.size,
            chunk_size: doc.chunk_size,
            chunk_hash,
            chunks,
        })
    }

    /// Builds the manifest of `data` with SHA-256 chunk digests (format 1).
    pub fn build(version: &str, file: &str, data: &[u8], chunk_size: u64) -> Result<Self, Error> {
        Manifest::build_with(version, file, data, chunk_size, ChunkHash::Sha256)
    }

    /// Builds the manifest of `data` (what a source publishes) with `chunk_hash` chunk
    /// digests.
    pub fn build_with(
        version: &str,
        file: &str,
        data: &[u8],
        chunk_size: u64,
        chunk_hash: ChunkHash,
    ) -> Result<Self, Error> {
        Manifest::build_from_reader(version, file, data, chunk_size, chunk_hash)
    }

    /// Builds the manifest of the image `reader` yields, holding one chunk in memory at
    /// a time (an image of any size; I/O errors name `file`).
    pub fn build_from_reader(
        version: &str,
        file: &str,
        mut reader: impl Read,
        chunk_size: u64,
        chunk_hash: ChunkHash,
    ) -> Result<Self, Error> {
        check_version(version)?;
        check_file_name(file)?;
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
            return Err(Error::MalformedManifest(format!(
                "chunk size {chunk_size} outside {MIN_CHUNK_SIZE}-{MAX_CHUNK_SIZE}"
            )));
        }
        let io_err = |e: std::io::Error| Error::Io {
            what: "read image",
            path: file.into(),
            reason: e.to_string(),
        };
        // chunk_size <= 64 MiB fits usize.
        let mut buf = Vec::with_capacity(chunk_size as usize);
        let mut sha = Sha256::new();
        let mut chunks = Vec::new();
        let mut size = 0u64;
        loop {
            buf.clear();
            // A full chunk, or what is left before the end of the image.
            let n = (&mut reader)
                .take(chunk_size)
                .read_to_end(&mut buf)
                .map_err(io_err)?;
            if n == 0 {
                break;
            }
            if chunks.len() == MAX_CHUNKS {
                return Err(Error::MalformedManifest(format!(
                    "more than {MAX_CHUNKS} chunks: use a larger chunk size"
                )));
            }
            sha.update(&buf);
            chunks.push(chunk_hash.digest(&buf));
            size += n as u64;
            if (n as u64) < chunk_size {
                break;
            }
        }
        if size == 0 {
            return Err(Error::MalformedManifest("empty image".into()));
        }
        Ok(Manifest {
            version: version.into(),
            file: file.into(),
            size,
            sha256: sha.finalize().into(),
            chunk_size,
            chunk_hash,
            chunks,
        })
    }

    /// The canonical JSON encoding (what [`Manifest::parse`] reads back identically).
    pub fn to_json(&self) -> Vec<u8> {
        let (format, chunk_hash) = match self.chunk_hash {
            ChunkHash::Sha256 => (MANIFEST_FORMAT, None),
            h => (MANIFEST_FORMAT_CHUNK_HASH, Some(h.name().to_string())),
        };
        let doc = ManifestDoc {
            format,
            version: self.version.clone(),
            file: self.file.clone(),
            size: self.size,
            sha256: hex::encode(self.sha256),
            chunk_size: self.chunk_size,
            chunk_hash,
            chunks: self.chunks.iter().map(hex::encode).collect(),
        };
        serde_json::to_vec(&doc).unwrap_or_default()
    }

    /// The image version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The image's file name (a single safe path segment).
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Image size in bytes (at least 1).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// SHA-256 of the whole image.
    pub fn sha256(&self) -> &Sha256Digest {
        &self.sha256
    }

    /// Chunk size in bytes (the last chunk may be shorter).
    pub fn chunk_size(&self) -> u64 {
        self.chunk_size
    }

    /// Number of chunks (at least 1).
    pub fn chunk_count(&self) -> u32 {
        // Bounded by MAX_CHUNKS at construction.
        self.chunks.len() as u32
    }

    /// The hash of the chunk digests.
    pub fn chunk_hash(&self) -> ChunkHash {
        self.chunk_hash
    }

    /// The digest of chunk `index` ([`Manifest::chunk_hash`]).
    pub fn chunk_digest(&self, index: u32) -> Option<&ChunkDigest> {
        self.chunks.get(index as usize)
    }

    /// The byte range of chunk `index` (empty when out of range).
    pub fn chunk_range(&self, index: u32) -> Range<u64> {
        let start = (index as u64)
            .saturating_mul(self.chunk_size)
            .min(self.size);
        start..start.saturating_add(self.chunk_size).min(self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trip_and_strictness() {
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let m = Manifest::build("6.3.0-1", "ssr.iso", &data, 4096).unwrap();
        assert_eq!(m.chunk_count(), 3);
        assert_eq!(m.chunk_range(2), 8192..10_000);
        let json = m.to_json();
        assert_eq!(Manifest::parse(&json).unwrap(), m);

        let text = String::from_utf8(json).unwrap();
        let mut trailing = text.clone();
        trailing.push_str("{}");
        assert!(Manifest::parse(trailing.as_bytes()).is_err());
        let unknown = text.replacen("{", "{\"extra\":1,", 1);
        assert!(Manifest::parse(unknown.as_bytes()).is_err());
        let format2 = text.replacen("\"format\":1", "\"format\":2", 1);
        assert!(Manifest::parse(format2.as_bytes()).is_err());
        let dup = text.replacen("{", "{\"size\":1,", 1);
        assert!(Manifest::parse(dup.as_bytes()).is_err());
        let bad_size = text.replacen("\"size\":10000", "\"size\":20000", 1);
        assert!(Manifest::parse(bad_size.as_bytes()).is_err());
        let evil_name = text.replacen("ssr.iso", "../etc", 1);
        assert!(Manifest::parse(evil_name.as_bytes()).is_err());
    }

    #[test]
    fn blake3_manifests_are_format_2_and_strict() {
        // Published BLAKE3 digests (the BLAKE3 paper's reference implementation).
        assert_eq!(
            hex::encode(ChunkHash::Blake3.digest(b"")),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        assert_eq!(
            hex::encode(ChunkHash::Blake3.digest(b"abc")),
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let m = Manifest::build_with("7.1.3", "ssr.img", &data, 4096, ChunkHash::Blake3).unwrap();
        assert_eq!(m.chunk_hash(), ChunkHash::Blake3);
        assert_eq!(
            m.chunk_digest(2),
            Some(&ChunkHash::Blake3.digest(&data[8192..]))
        );
        // The whole-file digest stays SHA-256.
        assert_eq!(m.sha256(), &<[u8; 32]>::from(Sha256::digest(&data)));
        let text = String::from_utf8(m.to_json()).unwrap();
        assert!(text.starts_with("{\"format\":2,"), "{text}");
        assert!(text.contains(",\"chunk-size\":4096,\"chunk-hash\":\"blake3\",\"chunks\":["));
        assert_eq!(Manifest::parse(text.as_bytes()).unwrap(), m);
        // One encoding per manifest: SHA-256 chunks only as format 1, BLAKE3 only as 2.
        let sha = Manifest::build("7.1.3", "ssr.img", &data, 4096).unwrap();
        assert_ne!(sha, m);
        let sha_text = String::from_utf8(sha.to_json()).unwrap();
        assert!(!sha_text.contains("chunk-hash"));
        for bad in [
            text.replacen("\"format\":2", "\"format\":1", 1),
            text.replacen("\"blake3\"", "\"sha256\"", 1),
            text.replacen("\"blake3\"", "\"BLAKE3\"", 1),
            text.replacen("\"blake3\"", "\"sha3-256\"", 1),
            text.replacen("\"blake3\"", "null", 1),
            text.replacen(",\"chunk-hash\":\"blake3\"", "", 1),
            text.replacen("\"format\":2", "\"format\":3", 1),
            sha_text.replacen("\"chunks\"", "\"chunk-hash\":\"sha256\",\"chunks\"", 1),
            sha_text.replacen("\"chunks\"", "\"chunk-hash\":null,\"chunks\"", 1),
        ] {
            assert!(Manifest::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    /// A reader that hands out at most `step` bytes per call, with an interruption.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
        interrupted: bool,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if !std::mem::replace(&mut self.interrupted, true) {
                return Err(std::io::ErrorKind::Interrupted.into());
            }
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_streamed_image_gets_the_manifest_of_its_bytes() {
        let data: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        for (len, hash) in [
            (50_000, ChunkHash::Sha256),
            (8192, ChunkHash::Blake3),
            (1, ChunkHash::Sha256),
        ] {
            let d = &data[..len];
            let streamed = Manifest::build_from_reader(
                "7.1.3",
                "ssr.img",
                Trickle {
                    data: d,
                    step: 1000,
                    interrupted: false,
                },
                4096,
                hash,
            )
            .unwrap();
            let expected = d.chunks(4096).map(|c| hash.digest(c)).collect::<Vec<_>>();
            assert_eq!(streamed.chunks, expected);
            assert_eq!(streamed.size(), len as u64);
            assert_eq!(streamed.sha256(), &<[u8; 32]>::from(Sha256::digest(d)));
            assert_eq!(
                Manifest::build_with("7.1.3", "ssr.img", d, 4096, hash).unwrap(),
                streamed
            );
        }
        assert!(Manifest::build("7.1.3", "ssr.img", &[], 4096).is_err());
        assert!(Manifest::build("7.1.3", "ssr.img", &data, 4095).is_err());
        let failing = std::io::Cursor::new(vec![0u8; 10]).chain(Broken);
        let e = Manifest::build_from_reader("7.1.3", "ssr.img", failing, 4096, ChunkHash::Sha256)
            .unwrap_err();
        assert!(
            matches!(&e, Error::Io { path, .. } if path == "ssr.img"),
            "{e:?}"
        );
    }

    struct Broken;

    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk gone"))
        }
    }

    #[test]
    fn versions_are_strict() {
        assert_eq!(
            parse_versions(br#"["6.3.0","6.2.1-r2"]"#).unwrap(),
            vec!["6.3.0".to_string(), "6.2.1-r2".to_string()]
        );
        assert!(parse_versions(br#"["6.3.0"] x"#).is_err());
        assert!(parse_versions(br#"{"versions":[]}"#).is_err());
        assert!(parse_versions(br#"["../x"]"#).is_err());
        assert!(parse_versions(br#"[1]"#).is_err());
        assert_eq!(
            parse_versions(&versions_json(&["a", "b"])).unwrap().len(),
            2
        );
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = Manifest::parse(&bytes);
            let _ = parse_versions(&bytes);
        }
    }
}
