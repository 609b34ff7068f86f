//! The decisions of onboarding, without I/O: what a protected directory found on disk
//! means, and what to do with it so that a kill at any step leaves a state the next
//! `start` can finish.
//!
//! The invariants, held by the order of steps in [`super::service`]:
//! - the sealed FEK is stored (atomically) before any directory is encrypted, so an
//!   encrypted directory's key can always be unsealed again;
//! - the onboarding record is written last, so "onboarded" means "every directory is
//!   encrypted with the sealed FEK";
//! - a directory with content is never encrypted (no plaintext migration) and never
//!   removed; only empty directories are (re)created.

use ssr_fscrypt::KeyIdentifier;

/// A protected directory as found before onboarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirState {
    /// Does not exist.
    Missing,
    /// Exists, not encrypted.
    Plain {
        /// Has no entries.
        empty: bool,
    },
    /// Exists with a v2 policy for `key`.
    Encrypted {
        /// The policy's key identifier.
        key: KeyIdentifier,
        /// Has no entries.
        empty: bool,
    },
    /// Something other than a directory is in the way.
    NotADirectory,
}

/// What onboarding does to one directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirAction {
    /// Already encrypted with the FEK.
    Keep,
    /// Create it, then set the policy.
    Create,
    /// Empty and unencrypted: set the policy.
    SetPolicy,
    /// Empty but encrypted with a key that is gone (a restarted onboarding): remove,
    /// create, set the policy.
    Recreate,
}

/// Why onboarding refuses a directory. Nothing has been changed when this is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Unencrypted content: it would have to be migrated.
    PlaintextContent,
    /// Encrypted content under a key that is not the FEK: it would be lost.
    ForeignEncryptedContent,
    /// Not a directory.
    NotADirectory,
}

impl Refusal {
    /// One line for the operator.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::PlaintextContent => {
                "exists with unencrypted content; plaintext is never migrated into an encrypted directory (move it away first)"
            }
            Refusal::ForeignEncryptedContent => {
                "holds content encrypted with a key this system cannot unseal; it is left untouched"
            }
            Refusal::NotADirectory => "exists and is not a directory",
        }
    }
}

/// The action for one directory, given the identifier of the FEK being onboarded.
pub fn plan_directory(state: DirState, fek: &KeyIdentifier) -> Result<DirAction, Refusal> {
    match state {
        DirState::Missing => Ok(DirAction::Create),
        DirState::Plain { empty: true } => Ok(DirAction::SetPolicy),
        DirState::Plain { empty: false } => Err(Refusal::PlaintextContent),
        DirState::Encrypted { key, .. } if key == *fek => Ok(DirAction::Keep),
        DirState::Encrypted { empty: true, .. } => Ok(DirAction::Recreate),
        DirState::Encrypted { empty: false, .. } => Err(Refusal::ForeignEncryptedContent),
        DirState::NotADirectory => Err(Refusal::NotADirectory),
    }
}

/// Checks every directory before anything is generated or changed. `fek` is the key
/// that will be used when it is already known (a resumed onboarding whose sealed FEK
/// unsealed), `None` when a fresh FEK will be generated.
pub fn precheck<P>(
    dirs: impl IntoIterator<Item = (P, DirState)>,
    fek: Option<&KeyIdentifier>,
) -> Result<(), (P, Refusal)> {
    for (path, state) in dirs {
        let refusal = match (state, fek) {
            (DirState::Encrypted { key, empty: false }, Some(k)) if key == *k => None,
            (DirState::Encrypted { empty: false, .. }, _) => Some(Refusal::ForeignEncryptedContent),
            (DirState::Plain { empty: false }, _) => Some(Refusal::PlaintextContent),
            (DirState::NotADirectory, _) => Some(Refusal::NotADirectory),
            _ => None,
        };
        if let Some(r) = refusal {
            return Err((path, r));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: KeyIdentifier = KeyIdentifier([0xa; 16]);
    const B: KeyIdentifier = KeyIdentifier([0xb; 16]);

    fn all_states() -> Vec<DirState> {
        let mut v = vec![DirState::Missing, DirState::NotADirectory];
        for empty in [true, false] {
            v.push(DirState::Plain { empty });
            for key in [A, B] {
                v.push(DirState::Encrypted { key, empty });
            }
        }
        v
    }

    #[test]
    fn never_migrates_plaintext_or_drops_content() {
        for state in all_states() {
            match plan_directory(state, &A) {
                Ok(DirAction::Keep) => assert!(matches!(state, DirState::Encrypted { key: A, .. })),
                Ok(DirAction::Create) => assert_eq!(state, DirState::Missing),
                Ok(DirAction::SetPolicy) => assert_eq!(state, DirState::Plain { empty: true }),
                Ok(DirAction::Recreate) => {
                    assert_eq!(
                        state,
                        DirState::Encrypted {
                            key: B,
                            empty: true
                        }
                    )
                }
                Err(_) => assert!(matches!(
                    state,
                    DirState::NotADirectory
                        | DirState::Plain { empty: false }
                        | DirState::Encrypted {
                            key: B,
                            empty: false
                        }
                )),
            }
        }
    }

    #[test]
    fn precheck_agrees_with_the_plan() {
        for state in all_states() {
            // With the FEK known, the precheck refuses exactly what the plan refuses.
            assert_eq!(
                precheck([("d", state)], Some(&A)).is_ok(),
                plan_directory(state, &A).is_ok(),
                "{state:?}"
            );
            // With a fresh FEK (unknown, different from every existing key), the
            // precheck refuses whatever the plan would refuse for any new key.
            let fresh = KeyIdentifier([0xf; 16]);
            assert_eq!(
                precheck([("d", state)], None).is_ok(),
                plan_directory(state, &fresh).is_ok(),
                "{state:?}"
            );
        }
        assert_eq!(
            precheck(
                [
                    ("ok", DirState::Missing),
                    ("bad", DirState::Plain { empty: false })
                ],
                None
            ),
            Err(("bad", Refusal::PlaintextContent))
        );
    }
}
