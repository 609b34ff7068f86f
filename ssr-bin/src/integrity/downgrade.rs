//! The downgrade guard (requirement 1.8): once a system is onboarded, installing a
//! version without Configuration Integrity would leave its protected directories
//! locked forever, so it is refused; rollback to the previously installed version is
//! allowed. *Which* version was previously installed is read from the history the
//! installers record in the state directory ([`History`]), never taken from the
//! command line: `--previous` may only agree with it.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use super::error::Error;

/// The first release with Configuration Integrity.
pub const FIRST_CI_VERSION: Version = Version {
    major: 7,
    minor: 1,
    patch: 3,
};

/// A release number `MAJOR.MINOR.PATCH`; a `-suffix` (build, `R2`) is accepted and
/// ignored, since Configuration Integrity is a property of the release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Version {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch).cmp(&(other.major, other.minor, other.patch))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl FromStr for Version {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::Version(s.chars().take(64).collect());
        let core = match s.split_once('-') {
            Some((core, suffix))
                if !suffix.is_empty()
                    && suffix
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')) =>
            {
                core
            }
            Some(_) => return Err(bad()),
            None => s,
        };
        let mut parts = core.split('.');
        let mut next = || -> Result<u32, Error> {
            let p = parts.next().ok_or_else(bad)?;
            if p.is_empty() || p.len() > 9 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            p.parse().map_err(|_| bad())
        };
        let v = Version {
            major: next()?,
            minor: next()?,
            patch: next()?,
        };
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(v)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Why a target version is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed {
    /// The system is not onboarded: nothing to protect.
    NotOnboarded,
    /// The target has Configuration Integrity.
    HasConfigurationIntegrity,
    /// The target is the previously installed version (a rollback).
    Rollback,
}

/// A refused target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "refusing to install {target}: this system is onboarded into Configuration Integrity, which versions before {FIRST_CI_VERSION} lack (rollback is only to the previously installed version{})",
    previous.map(|p| format!(", {p}")).unwrap_or_default()
)]
pub struct Refused {
    /// The version asked for.
    pub target: Version,
    /// The previously installed version, when known.
    pub previous: Option<Version>,
}

/// Decides whether an installer may install `target`: a version before
/// [`FIRST_CI_VERSION`] on an onboarded system only as a rollback to the version the
/// `history` shows installed before the current one, and only when `claimed` (the
/// installer's `--previous`), if given, says the same.
pub fn check_target(
    onboarded: bool,
    target: Version,
    claimed: Option<Version>,
    history: &History,
) -> Result<Allowed, Refused> {
    let previous = history.previous();
    if !onboarded {
        Ok(Allowed::NotOnboarded)
    } else if target >= FIRST_CI_VERSION {
        Ok(Allowed::HasConfigurationIntegrity)
    } else if previous == Some(target) && claimed.is_none_or(|c| c == target) {
        Ok(Allowed::Rollback)
    } else {
        Err(Refused { target, previous })
    }
}

/// The first line of the history file.
const HISTORY_HEADER: &str = "integrity-handler installed versions v1";
/// At most this many versions are kept (the oldest are dropped).
pub const HISTORY_MAX: usize = 256;

/// The installed-version history (`state-dir/installed-versions`), oldest first:
/// installers call `integrity-handler record-installed VERSION` after each install
/// or rollback. Text: a header line, then one `MAJOR.MINOR.PATCH` per line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History(Vec<Version>);

impl History {
    /// Strict parser: the header, then versions, one per line, each line ending in
    /// `\n`; at most [`HISTORY_MAX`].
    pub fn parse(text: &str) -> Result<History, Error> {
        let bad = |why: &str| Error::Version(format!("installed-version history: {why}"));
        let body = text
            .strip_prefix(HISTORY_HEADER)
            .and_then(|t| t.strip_prefix('\n'))
            .ok_or_else(|| bad("bad header"))?;
        if !body.is_empty() && !body.ends_with('\n') {
            return Err(bad("last line not terminated"));
        }
        let versions = body
            .lines()
            .map(|l| l.parse::<Version>())
            .collect::<Result<Vec<_>, _>>()?;
        if versions.len() > HISTORY_MAX {
            return Err(bad("too many entries"));
        }
        Ok(History(versions))
    }

    /// The file text.
    pub fn to_text(&self) -> String {
        let mut out = format!("{HISTORY_HEADER}\n");
        for v in &self.0 {
            out.push_str(&format!("{v}\n"));
        }
        out
    }

    /// Records that `installed` is now installed (nothing when it already is the
    /// latest entry); on an empty history, `before` (the version this install
    /// replaced, as the installer knows it at that moment) is recorded first.
    pub fn record(&mut self, installed: Version, before: Option<Version>) {
        if self.0.is_empty()
            && let Some(b) = before
            && b != installed
        {
            self.0.push(b);
        }
        if self.0.last() != Some(&installed) {
            self.0.push(installed);
        }
        let excess = self.0.len().saturating_sub(HISTORY_MAX);
        self.0.drain(..excess);
    }

    /// The currently installed version (the latest entry).
    pub fn current(&self) -> Option<Version> {
        self.0.last().copied()
    }

    /// The version installed before the current one.
    pub fn previous(&self) -> Option<Version> {
        self.0.len().checked_sub(2).map(|i| self.0[i])
    }

    /// All entries, oldest first.
    pub fn versions(&self) -> &[Version] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_orders() {
        assert_eq!(v("7.1.3-R2"), v("7.1.3"));
        assert!(v("7.1.2") < v("7.1.3"));
        assert!(v("7.10.0") > v("7.9.9"));
        assert!(v("6.3.0-107.r1") < FIRST_CI_VERSION);
        for bad in [
            "",
            "7",
            "7.1",
            "7.1.3.4",
            "7.1.x",
            "7.1.3-",
            "-7.1.3",
            "7..3",
            "7.1.3 ",
            "1234567890.0.0",
            "7.1.3-R 2",
        ] {
            assert!(bad.parse::<Version>().is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn refuses_downgrade_below_ci_but_allows_rollback_to_the_recorded_previous() {
        let none = History::default();
        assert_eq!(
            check_target(false, v("6.0.0"), None, &none),
            Ok(Allowed::NotOnboarded)
        );
        assert_eq!(
            check_target(true, v("7.1.3"), None, &none),
            Ok(Allowed::HasConfigurationIntegrity)
        );
        assert_eq!(
            check_target(true, v("7.2.0"), Some(v("7.1.2")), &none),
            Ok(Allowed::HasConfigurationIntegrity)
        );
        // --previous alone proves nothing.
        assert!(check_target(true, v("7.1.2"), Some(v("7.1.2-R1")), &none).is_err());
        let mut h = History::default();
        h.record(v("7.1.3"), Some(v("7.1.2")));
        assert_eq!(h.versions(), [v("7.1.2"), v("7.1.3")]);
        assert_eq!(
            check_target(true, v("7.1.2"), None, &h),
            Ok(Allowed::Rollback)
        );
        assert_eq!(
            check_target(true, v("7.1.2-R1"), Some(v("7.1.2")), &h),
            Ok(Allowed::Rollback)
        );
        // A claim that contradicts the history, or another old version: refused.
        assert!(check_target(true, v("7.1.2"), Some(v("7.1.1")), &h).is_err());
        let refused = check_target(true, v("7.1.1"), Some(v("7.1.1")), &h).unwrap_err();
        assert!(refused.to_string().contains("refusing to install 7.1.1"));
        assert!(refused.to_string().contains("7.1.2"));
        // Once 7.1.4 follows 7.1.3, 7.1.2 is no longer the previous version.
        h.record(v("7.1.4"), Some(v("6.0.0")));
        assert_eq!(h.previous(), Some(v("7.1.3")));
        assert!(check_target(true, v("7.1.2"), None, &h).is_err());
        assert!(check_target(true, v("6.3.0"), None, &h).is_err());
    }

    #[test]
    fn history_round_trips_and_is_strict() {
        let mut h = History::default();
        h.record(v("7.1.3"), None);
        h.record(v("7.1.3"), None);
        h.record(v("7.2.0"), None);
        assert_eq!(h.versions().len(), 2);
        assert_eq!(History::parse(&h.to_text()).unwrap(), h);
        assert_eq!(
            History::parse(&History::default().to_text()).unwrap(),
            History::default()
        );
        for bad in [
            "",
            "integrity-handler installed versions v2\n",
            "integrity-handler installed versions v1\n7.1.3",
            "integrity-handler installed versions v1\n7.1\n",
            "integrity-handler installed versions v1\n\n",
        ] {
            assert!(History::parse(bad).is_err(), "accepted {bad:?}");
        }
        for i in 0..(HISTORY_MAX as u32 + 10) {
            h.record(
                Version {
                    major: 8,
                    minor: i,
                    patch: 0,
                },
                None,
            );
        }
        assert_eq!(h.versions().len(), HISTORY_MAX);
        assert!(History::parse(&h.to_text()).is_ok());
    }
}
