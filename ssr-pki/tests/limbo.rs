//! Runs the x509-limbo device subset through the `limbo_harness` example and compares
//! with the suite's expectations and the checked-in list of divergences, both vendored in
//! `testdata/limbo/`.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

#[path = "../examples/limbo_harness.rs"]
#[allow(dead_code)]
mod harness;

/// The vendored suite subset (see `testdata/limbo/README.md`: origin, version, licence).
const SUITE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/testdata/limbo/limbo-subset-core.json"
);
const DIVERGENCES: &str = include_str!("../testdata/limbo/divergences.txt");
const MIN_PASSING: usize = 150;

/// `id -> (our verdict, reason)` from the checked-in list.
fn listed_divergences() -> BTreeMap<String, (String, String)> {
    DIVERGENCES
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut f = l.splitn(3, '\t');
            let id = f.next().unwrap_or_default().to_owned();
            let verdict = f.next().unwrap_or_default().to_owned();
            let reason = f.next().unwrap_or_default().to_owned();
            assert!(
                !reason.trim().is_empty() && matches!(verdict.as_str(), "FAILURE" | "SKIPPED"),
                "malformed divergence line (id TAB FAILURE|SKIPPED TAB reason): {l}"
            );
            (id, (verdict, reason))
        })
        .collect()
}

#[test]
fn limbo_device_subset() {
    let text = std::fs::read_to_string(SUITE).unwrap_or_else(|e| panic!("{SUITE}: {e}"));
    let suite: Value = serde_json::from_str(&text).expect("suite JSON");
    let now = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs(),
    )
    .expect("time fits i64");
    let out = harness::run_suite(&suite, now).expect("harness runs");

    let expected: BTreeMap<&str, &str> = suite["testcases"]
        .as_array()
        .expect("testcases")
        .iter()
        .map(|c| {
            (
                c["id"].as_str().expect("id"),
                c["expected_result"].as_str().expect("expected_result"),
            )
        })
        .collect();
    let results = out["results"].as_array().expect("results");
    assert_eq!(results.len(), expected.len(), "one result per testcase");

    let listed = listed_divergences();
    let mut passing = 0;
    let mut wrongly_accepted = Vec::new();
    let mut unlisted = Vec::new();
    let mut diverging = Vec::new();
    for r in results {
        let id = r["id"].as_str().expect("id");
        let actual = r["actual_result"].as_str().expect("actual_result");
        let context = r["context"].as_str().unwrap_or_default();
        let want = expected[id];
        if actual == want {
            passing += 1;
            continue;
        }
        diverging.push(id.to_owned());
        if actual == "SUCCESS" {
            wrongly_accepted.push(id.to_owned());
        } else if listed.get(id).map(|(v, _)| v.as_str()) != Some(actual) {
            unlisted.push(format!("{id}: {actual} ({context})"));
        }
    }
    let stale: Vec<&String> = listed.keys().filter(|id| !diverging.contains(id)).collect();

    assert!(
        wrongly_accepted.is_empty(),
        "accepted chains the suite rejects: {wrongly_accepted:#?}"
    );
    assert!(
        unlisted.is_empty(),
        "divergences missing from testdata/limbo/divergences.txt: {unlisted:#?}"
    );
    assert!(
        stale.is_empty(),
        "listed divergences that now agree with the suite (remove them): {stale:#?}"
    );
    assert!(
        passing >= MIN_PASSING,
        "only {passing} of {} cases pass (need {MIN_PASSING})",
        expected.len()
    );
}

#[test]
fn rfc3339_parser() {
    assert_eq!(harness::parse_rfc3339("1970-01-01T00:00:03+00:00"), Some(3));
    assert_eq!(
        harness::parse_rfc3339("2024-01-01T00:00:00Z"),
        Some(1_704_067_200)
    );
    assert_eq!(
        harness::parse_rfc3339("2024-01-01T01:30:00.25+01:30"),
        Some(1_704_067_200)
    );
    assert_eq!(harness::parse_rfc3339("2024-01-01"), None);
}
