//! Certificate alarms and the `fail-soft` / `fail-hard` decision.
//!
//! | condition | alarm |
//! |---|---|
//! | valid, more than 30 days left | none |
//! | valid, 30 days or less left (`<= 30 * 86400` s) | minor |
//! | valid, 7 days or less left (`<= 7 * 86400` s) | major |
//! | expired, not yet valid, revoked, or otherwise invalid | critical |
//!
//! Validity is inclusive at both ends (RFC 5280 §4.1.2.5): a certificate is valid at
//! `not_after` itself and expired one second later. The decision is a value: the caller
//! (the peering code) carries it out.

use core::fmt;
use core::str::FromStr;

use serde::Serialize;

use crate::Error;

/// Seconds in a day.
pub const DAY: i64 = 86_400;
/// At or under this many seconds left: minor alarm.
pub const MINOR_THRESHOLD: i64 = 30 * DAY;
/// At or under this many seconds left: major alarm.
pub const MAJOR_THRESHOLD: i64 = 7 * DAY;

/// Alarm severity, ordered from none to critical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlarmLevel {
    /// No alarm.
    None,
    /// Expires within a month.
    Minor,
    /// Expires within a week.
    Major,
    /// Expired, revoked or invalid.
    Critical,
}

impl fmt::Display for AlarmLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AlarmLevel::None => "none",
            AlarmLevel::Minor => "minor",
            AlarmLevel::Major => "major",
            AlarmLevel::Critical => "critical",
        })
    }
}

/// What state a certificate is in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "condition")]
pub enum Condition {
    /// Within its validity period, not revoked, no issue found.
    Valid {
        /// Seconds until `not_after` (0 at the last valid second).
        seconds_left: i64,
    },
    /// `now > not_after`.
    Expired {
        /// Seconds since `not_after`.
        seconds_ago: i64,
    },
    /// `now < not_before`.
    NotYetValid {
        /// Seconds until `not_before`.
        seconds_until: i64,
    },
    /// On a known CRL.
    Revoked,
    /// Any other validation issue (chain, extensions, algorithms…).
    Invalid {
        /// The issue, one line.
        reason: String,
    },
}

impl Condition {
    /// The condition from the validity dates alone (Unix seconds).
    pub fn from_validity(not_before: i64, not_after: i64, now: i64) -> Self {
        if now < not_before {
            Condition::NotYetValid {
                seconds_until: not_before.saturating_sub(now),
            }
        } else if now > not_after {
            Condition::Expired {
                seconds_ago: now.saturating_sub(not_after),
            }
        } else {
            Condition::Valid {
                seconds_left: not_after.saturating_sub(now),
            }
        }
    }

    /// The alarm level for this condition.
    pub fn alarm(&self) -> AlarmLevel {
        match *self {
            Condition::Valid { seconds_left } if seconds_left <= MAJOR_THRESHOLD => {
                AlarmLevel::Major
            }
            Condition::Valid { seconds_left } if seconds_left <= MINOR_THRESHOLD => {
                AlarmLevel::Minor
            }
            Condition::Valid { .. } => AlarmLevel::None,
            _ => AlarmLevel::Critical,
        }
    }

    /// Whether the certificate may be used (it may still raise an expiry alarm).
    pub fn is_usable(&self) -> bool {
        matches!(self, Condition::Valid { .. })
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::Valid { seconds_left } => {
                write!(f, "valid, expires in {}", human(*seconds_left))
            }
            Condition::Expired { seconds_ago } => write!(f, "expired {} ago", human(*seconds_ago)),
            Condition::NotYetValid { seconds_until } => {
                write!(f, "not valid for another {}", human(*seconds_until))
            }
            Condition::Revoked => f.write_str("revoked"),
            Condition::Invalid { reason } => write!(f, "invalid: {reason}"),
        }
    }
}

fn human(s: i64) -> String {
    if s >= DAY {
        format!("{}d {}h", s / DAY, (s % DAY) / 3600)
    } else {
        format!("{}h {}m {}s", s / 3600, (s % 3600) / 60, s % 60)
    }
}

/// `fail-soft` (default: alarm only) or `fail-hard` (alarm, all peerings removed, the
/// device leaves SVR) for revoked, expired or invalid certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailMode {
    /// Alarm and notify only.
    #[default]
    FailSoft,
    /// Alarm, remove every peering, leave SVR.
    FailHard,
}

impl FromStr for FailMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "fail-soft" => Ok(FailMode::FailSoft),
            "fail-hard" => Ok(FailMode::FailHard),
            other => Err(Error::InvalidConfig {
                field: "fail-mode",
                reason: format!("{other:?} is not fail-soft or fail-hard"),
            }),
        }
    }
}

/// What the caller must do about a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The alarm to raise (or [`AlarmLevel::None`] to clear).
    pub alarm: AlarmLevel,
    /// The condition behind it.
    pub condition: Condition,
    /// `true` under `fail-hard` when the certificate is unusable: remove all peerings
    /// and stop participating in SVR.
    pub remove_peerings: bool,
}

/// The decision for a certificate in `condition` under `mode`.
pub fn decide(mode: FailMode, condition: Condition) -> Decision {
    let remove_peerings = mode == FailMode::FailHard && !condition.is_usable();
    Decision {
        alarm: condition.alarm(),
        condition,
        remove_peerings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NB: i64 = 1_700_000_000;
    const NA: i64 = NB + 365 * DAY;

    fn level(now: i64) -> AlarmLevel {
        Condition::from_validity(NB, NA, now).alarm()
    }

    #[test]
    fn thresholds_at_the_boundaries() {
        assert_eq!(level(NB - 1), AlarmLevel::Critical);
        assert_eq!(level(NB), AlarmLevel::None);
        assert_eq!(level(NA - MINOR_THRESHOLD - 1), AlarmLevel::None);
        assert_eq!(level(NA - MINOR_THRESHOLD), AlarmLevel::Minor);
        assert_eq!(level(NA - MAJOR_THRESHOLD - 1), AlarmLevel::Minor);
        assert_eq!(level(NA - MAJOR_THRESHOLD), AlarmLevel::Major);
        assert_eq!(level(NA), AlarmLevel::Major);
        assert_eq!(level(NA + 1), AlarmLevel::Critical);
        assert_eq!(level(i64::MAX), AlarmLevel::Critical);
        assert_eq!(level(i64::MIN), AlarmLevel::Critical);
    }

    #[test]
    fn decisions() {
        let expired = Condition::from_validity(NB, NA, NA + 1);
        assert!(matches!(expired, Condition::Expired { seconds_ago: 1 }));
        let soft = decide(FailMode::FailSoft, expired.clone());
        assert_eq!(soft.alarm, AlarmLevel::Critical);
        assert!(!soft.remove_peerings);
        assert!(decide(FailMode::FailHard, expired).remove_peerings);
        assert!(decide(FailMode::FailHard, Condition::Revoked).remove_peerings);
        let minor = decide(
            FailMode::FailHard,
            Condition::from_validity(NB, NA, NA - DAY * 20),
        );
        assert_eq!(minor.alarm, AlarmLevel::Minor);
        assert!(!minor.remove_peerings);
        assert_eq!("fail-hard".parse::<FailMode>().unwrap(), FailMode::FailHard);
        assert!("hard".parse::<FailMode>().is_err());
    }
}
