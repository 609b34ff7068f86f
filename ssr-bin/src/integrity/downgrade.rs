//! The downgrade guard (requirement 1.8): once a system is onboarded, installing a
//! version without Configuration Integrity would leave its protected directories
//! locked forever, so it is refused; rollback to the previously installed version is
//! allowed.

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

/// Decides whether an installer may install `target`.
pub fn check_target(
    onboarded: bool,
    target: Version,
    previous: Option<Version>,
) -> Result<Allowed, Refused> {
    if !onboarded {
        Ok(Allowed::NotOnboarded)
    } else if target >= FIRST_CI_VERSION {
        Ok(Allowed::HasConfigurationIntegrity)
    } else if previous == Some(target) {
        Ok(Allowed::Rollback)
    } else {
        Err(Refused { target, previous })
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
    fn refuses_downgrade_below_ci_but_allows_rollback() {
        assert_eq!(
            check_target(false, v("6.0.0"), None),
            Ok(Allowed::NotOnboarded)
        );
        assert_eq!(
            check_target(true, v("7.1.3"), None),
            Ok(Allowed::HasConfigurationIntegrity)
        );
        assert_eq!(
            check_target(true, v("7.2.0"), Some(v("7.1.2"))),
            Ok(Allowed::HasConfigurationIntegrity)
        );
        assert_eq!(
            check_target(true, v("7.1.2"), Some(v("7.1.2-R1"))),
            Ok(Allowed::Rollback)
        );
        let refused = check_target(true, v("7.1.1"), Some(v("7.1.2"))).unwrap_err();
        assert!(refused.to_string().contains("refusing to install 7.1.1"));
        assert!(check_target(true, v("6.3.0"), None).is_err());
    }
}
