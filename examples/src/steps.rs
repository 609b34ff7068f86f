//! The device demo's bookkeeping: each step passed, failed or was skipped, the demo exits
//! non-zero when any step failed, and its last line names the failed and skipped steps.

use std::fmt::Display;
use std::process::ExitCode;

/// What became of one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed(String),
    Skipped(String),
}

/// The steps of a run, in order.
#[derive(Debug, Default)]
pub struct Steps {
    done: Vec<(String, Outcome)>,
}

impl Steps {
    /// Records a step's result, printing `FAILED: <step>: <error>` for an error.
    pub fn record<T, E: Display>(&mut self, step: &str, result: Result<T, E>) -> Option<T> {
        match result {
            Ok(v) => {
                self.done.push((step.to_owned(), Outcome::Passed));
                Some(v)
            }
            Err(e) => {
                println!("FAILED: {step}: {e}");
                self.done
                    .push((step.to_owned(), Outcome::Failed(e.to_string())));
                None
            }
        }
    }

    /// Records a step that could not run here, printing `SKIPPED: <step>: <reason>`.
    pub fn skip(&mut self, step: &str, reason: &str) {
        println!("SKIPPED: {step}: {reason}");
        self.done
            .push((step.to_owned(), Outcome::Skipped(reason.to_owned())));
    }

    /// The steps recorded so far.
    pub fn outcomes(&self) -> &[(String, Outcome)] {
        &self.done
    }

    /// The last line of the demo: how many steps passed, which failed, which were skipped.
    pub fn last_line(&self) -> String {
        let names = |want: fn(&Outcome) -> bool| -> Vec<&str> {
            self.done
                .iter()
                .filter(|(_, o)| want(o))
                .map(|(n, _)| n.as_str())
                .collect()
        };
        let passed = names(|o| *o == Outcome::Passed).len();
        let failed = names(|o| matches!(o, Outcome::Failed(_)));
        let skipped = names(|o| matches!(o, Outcome::Skipped(_)));
        let mut line = if failed.is_empty() {
            format!("device demo: {passed} of {} steps passed", self.done.len())
        } else {
            format!(
                "device demo FAILED: {} failed ({}), {passed} passed",
                failed.len(),
                failed.join(", ")
            )
        };
        if !skipped.is_empty() {
            line += &format!("; {} skipped ({})", skipped.len(), skipped.join(", "));
        }
        line
    }

    /// Failure when any step failed (skips alone do not fail the demo).
    pub fn exit_code(&self) -> ExitCode {
        if self
            .done
            .iter()
            .any(|(_, o)| matches!(o, Outcome::Failed(_)))
        {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_line_names_failed_and_skipped_steps() {
        let mut s = Steps::default();
        assert_eq!(s.record("a", Ok::<_, String>(1)), Some(1));
        assert_eq!(s.record::<(), _>("b", Err("broken")), None);
        s.skip("c", "needs root");
        assert_eq!(s.record::<(), _>("d", Err("also broken")), None);
        assert_eq!(
            s.last_line(),
            "device demo FAILED: 2 failed (b, d), 1 passed; 1 skipped (c)"
        );
        assert_eq!(s.exit_code(), ExitCode::FAILURE);
        assert_eq!(s.outcomes()[1].1, Outcome::Failed("broken".into()));
    }

    #[test]
    fn all_passed_or_skipped_exits_zero() {
        let mut s = Steps::default();
        s.record("a", Ok::<_, String>(()));
        assert_eq!(s.last_line(), "device demo: 1 of 1 steps passed");
        s.skip("b", "needs root");
        assert_eq!(
            s.last_line(),
            "device demo: 1 of 2 steps passed; 1 skipped (b)"
        );
        assert_eq!(s.exit_code(), ExitCode::SUCCESS);
    }
}
