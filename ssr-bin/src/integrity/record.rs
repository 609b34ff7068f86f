//! The onboarding record: written last, atomically, it is what makes a system
//! "onboarded". It names the FEK's key identifier (so `lock` and `status` need no TPM)
//! and the directories protected with it.
//!
//! Version 1, UTF-8 text, every line ending in `\n`, nothing else accepted:
//!
//! ```text
//! integrity-handler onboarding record v1
//! key-identifier 0123456789abcdef0123456789abcdef
//! directory /etc/secure
//! directory /var/lib/secure
//! ```

use std::path::{Path, PathBuf};

use ssr_fscrypt::KeyIdentifier;

const HEADER_V1: &str = "integrity-handler onboarding record v1";
const MAX_RECORD_BYTES: usize = 64 * 1024;

/// A parsed onboarding record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    key_identifier: KeyIdentifier,
    directories: Vec<PathBuf>,
}

impl Record {
    /// A record for these directories; `None` when the list is empty or a path is not
    /// absolute UTF-8 without newlines (it could not be written back).
    pub fn new(key_identifier: KeyIdentifier, directories: Vec<PathBuf>) -> Option<Record> {
        let ok = !directories.is_empty()
            && directories
                .iter()
                .all(|d| d.is_absolute() && d.to_str().is_some_and(|s| !s.contains(['\n', '\r'])));
        ok.then_some(Record {
            key_identifier,
            directories,
        })
    }

    /// The FEK's fscrypt key identifier.
    pub fn key_identifier(&self) -> &KeyIdentifier {
        &self.key_identifier
    }

    /// The protected directories.
    pub fn directories(&self) -> &[PathBuf] {
        &self.directories
    }

    /// Strict parser: exact header, one key identifier, at least one absolute
    /// directory, no duplicates, no trailing bytes.
    pub fn parse(bytes: &[u8]) -> Result<Record, String> {
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(format!("longer than {MAX_RECORD_BYTES} bytes"));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| "does not end with a newline".to_string())?;
        let mut lines = body.split('\n');
        match lines.next() {
            Some(HEADER_V1) => {}
            Some(h) if h.starts_with("integrity-handler onboarding record ") => {
                return Err(format!("unsupported version: {h:?}"));
            }
            _ => return Err("not an onboarding record".into()),
        }
        let key_identifier = lines
            .next()
            .and_then(|l| l.strip_prefix("key-identifier "))
            .ok_or_else(|| "second line is not `key-identifier HEX`".to_string())?;
        if key_identifier.len() != 32
            || !key_identifier
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err("key identifier is not 32 lowercase hex digits".into());
        }
        let key_identifier =
            KeyIdentifier::from_hex(key_identifier).map_err(|e| format!("key identifier: {e}"))?;
        let mut directories: Vec<PathBuf> = Vec::new();
        for line in lines {
            let dir = line
                .strip_prefix("directory ")
                .ok_or_else(|| format!("unexpected line {line:?}"))?;
            let dir = PathBuf::from(dir);
            if !dir.is_absolute() || dir.parent().is_none() || dir.as_os_str().len() > 4096 {
                return Err(format!("directory {} is not absolute", dir.display()));
            }
            if directories.contains(&dir) {
                return Err(format!("directory {} is listed twice", dir.display()));
            }
            directories.push(dir);
        }
        Record::new(key_identifier, directories).ok_or_else(|| "no directory".to_string())
    }

    /// The record's bytes; [`Record::parse`] reads them back.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{HEADER_V1}\nkey-identifier {}\n", self.key_identifier);
        for d in &self.directories {
            out.push_str("directory ");
            out.push_str(&d.to_string_lossy());
            out.push('\n');
        }
        out.into_bytes()
    }

    /// Reads a record; `Ok(None)` when the file does not exist.
    pub fn read(path: &Path) -> super::Result<Option<Record>> {
        match std::fs::read(path) {
            Ok(bytes) => Record::parse(&bytes)
                .map(Some)
                .map_err(|reason| super::Error::Record {
                    path: path.to_path_buf(),
                    reason,
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(super::Error::io("read", path, e)),
        }
    }

    /// Writes the record atomically (temporary file, fsync, rename, fsync directory).
    pub fn write_atomic(&self, path: &Path) -> super::Result<()> {
        super::fsutil::write_atomic(path, &self.to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record::new(
            KeyIdentifier([0xab; 16]),
            vec!["/etc/secure".into(), "/var/lib/a b".into()],
        )
        .unwrap()
    }

    #[test]
    fn round_trips() {
        let r = sample();
        assert_eq!(Record::parse(&r.to_bytes()).unwrap(), r);
    }

    #[test]
    fn rejects_malformed_records() {
        let good = String::from_utf8(sample().to_bytes()).unwrap();
        let bad = [
            good.trim_end().to_string(),
            format!("{good}x"),
            format!("{good}\n"),
            good.replace("v1", "v2"),
            good.replace("ab", "AB"),
            good.replace("abab\n", "ab\n"),
            good.replace("/etc/secure", "etc/secure"),
            good.replace("/var/lib/a b", "/etc/secure"),
            good.replace("directory /etc/secure\ndirectory /var/lib/a b\n", ""),
            good.replace("key-identifier", "key_identifier"),
            String::new(),
        ];
        for b in bad {
            assert!(Record::parse(b.as_bytes()).is_err(), "accepted {b:?}");
        }
        assert!(Record::parse(&[0xff, b'\n']).is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_parse_or_fail_without_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            if let Ok(r) = Record::parse(&bytes) {
                // Whatever parses is canonical: it writes back to the same bytes.
                proptest::prop_assert_eq!(r.to_bytes(), bytes);
            }
        }

        #[test]
        fn round_trips_any_record(
            id in proptest::array::uniform16(proptest::num::u8::ANY),
            names in proptest::collection::btree_set("[a-zA-Z0-9 _.-]{1,20}", 1..5),
        ) {
            let dirs: Vec<PathBuf> = names.iter().map(|n| Path::new("/srv").join(n)).collect();
            let r = Record::new(KeyIdentifier(id), dirs).unwrap();
            proptest::prop_assert_eq!(Record::parse(&r.to_bytes()).unwrap(), r);
        }
    }

    #[test]
    fn refuses_unwritable_directories() {
        let id = KeyIdentifier([1; 16]);
        assert!(Record::new(id, vec![]).is_none());
        assert!(Record::new(id, vec!["/a\nb".into()]).is_none());
        assert!(Record::new(id, vec!["rel".into()]).is_none());
    }
}
