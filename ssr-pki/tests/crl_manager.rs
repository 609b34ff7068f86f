//! The CRL manager driven by a virtual clock (no sleeps): polling, backoff, alarm raise
//! and clear, published master lists; then the same manager fetching from real local
//! HTTP servers (`ssr_testkit::http::HttpServer`), one of which fails.

mod ops_fixtures;

use std::time::{Duration, Instant};

use ops_fixtures::{DAY, NOW, crl, root};
use ssr_pki::Certificate;
use ssr_pki::crl_manager::{CrlConfig, CrlManager, MasterList, Output, split_supported};

/// Drains the manager's outputs.
fn drain(m: &mut CrlManager) -> Vec<Output> {
    std::iter::from_fn(|| m.poll_output()).collect()
}

fn fetches(outs: &[Output]) -> Vec<String> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Fetch { url } => Some(url.clone()),
            _ => None,
        })
        .collect()
}

fn alarms(outs: &[Output]) -> Vec<(String, bool)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Alarm { url, raised, .. } => Some((url.clone(), *raised)),
            _ => None,
        })
        .collect()
}

fn published(outs: &[Output]) -> Vec<MasterList> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Publish(l) => Some(l.clone()),
            _ => None,
        })
        .collect()
}

const A: &str = "http://crl-a.test/a.crl";
const B: &str = "http://crl-b.test/b.crl";

#[test]
fn polling_backoff_and_alarms_on_a_virtual_clock() {
    let ca = root("Sim Root");
    let ca_cert = Certificate::from_pem(&ca.pem()).unwrap();
    let t0 = Instant::now();
    let config = CrlConfig::new(&[A, B])
        .unwrap()
        .with_polling_hours(24)
        .unwrap()
        .with_backoff_secs(60)
        .unwrap();
    let mut m = CrlManager::new(config, vec![ca_cert], t0, NOW);

    // Both URLs are due at once.
    assert_eq!(m.poll_timeout(), Some(t0));
    m.handle_timeout(t0);
    let outs = drain(&mut m);
    assert_eq!(fetches(&outs), vec![A.to_string(), B.to_string()]);
    // An extra handle_timeout does not fetch twice.
    m.handle_timeout(t0);
    assert!(drain(&mut m).is_empty());

    // A answers with a CRL revoking 7 and 9; B fails.
    let crl_a1 = crl(&ca, &[7, 9], NOW - DAY, 1);
    let t1 = t0 + Duration::from_secs(1);
    assert!(m.handle_fetched(A, &crl_a1, t1));
    assert!(m.handle_fetch_failed(B, "connection refused", t1));
    let outs = drain(&mut m);
    assert_eq!(alarms(&outs), vec![(B.to_string(), true)]);
    let lists = published(&outs);
    assert_eq!(lists.len(), 1);
    let serials: Vec<_> = lists[0].entries.iter().map(|e| e.serial.as_str()).collect();
    assert_eq!(serials, ["07", "09"]);
    assert_eq!(lists[0].generated_at, NOW + 1);
    // The master list survives its own strict parser.
    assert_eq!(
        MasterList::from_json(&lists[0].to_json()).unwrap(),
        lists[0]
    );

    // B retries after the backoff, doubling: 60 s, 120 s, 240 s.
    let mut t = t1;
    for (attempt, wait) in [60u64, 120, 240].into_iter().enumerate() {
        let next = m.poll_timeout().unwrap();
        assert_eq!(next, t + Duration::from_secs(wait), "attempt {attempt}");
        m.handle_timeout(next - Duration::from_millis(1));
        assert!(
            fetches(&drain(&mut m)).is_empty(),
            "nothing before the deadline"
        );
        m.handle_timeout(next);
        assert_eq!(fetches(&drain(&mut m)), vec![B.to_string()]);
        t = next;
        assert!(m.handle_fetch_failed(B, "HTTP status 500", t));
        // The alarm was raised once and stays raised: no new alarm output.
        assert!(alarms(&drain(&mut m)).is_empty());
    }
    assert_eq!(m.counters().crl_fetch_failure, 4);
    assert!(
        m.status()
            .iter()
            .any(|s| s.url == B && s.alarm && s.consecutive_failures == 4)
    );

    // B's next try succeeds: the alarm clears and the master list merges both CRLs.
    let next = m.poll_timeout().unwrap();
    assert_eq!(next, t + Duration::from_secs(480));
    m.handle_timeout(next);
    assert_eq!(fetches(&drain(&mut m)), vec![B.to_string()]);
    let ca_b = crl(&ca, &[9, 11], NOW - DAY, 2);
    assert!(m.handle_fetched(B, &ca_b, next));
    let outs = drain(&mut m);
    assert_eq!(alarms(&outs), vec![(B.to_string(), false)]);
    let list = published(&outs).pop().unwrap();
    let serials: Vec<_> = list.entries.iter().map(|e| e.serial.as_str()).collect();
    assert_eq!(
        serials,
        ["07", "09", "0B"],
        "09 listed by both CRLs appears once"
    );

    // A's next poll: its CRL's nextUpdate (thisUpdate + 7 days) is after the 24 h
    // polling interval, so A polls 24 h after its success.
    let next = m.poll_timeout().unwrap();
    assert_eq!(next, t1 + Duration::from_secs(24 * 3600));
    m.handle_timeout(next);
    assert_eq!(fetches(&drain(&mut m)), vec![A.to_string()]);
    // A now revokes 12 too, and no longer 7: audit counts both.
    let crl_a2 = crl(&ca, &[9, 12], NOW, 3);
    assert!(m.handle_fetched(A, &crl_a2, next));
    let outs = drain(&mut m);
    let audit = outs
        .iter()
        .find_map(|o| match o {
            Output::Audit(e) => Some(serde_json::to_value(e).unwrap()),
            _ => None,
        })
        .unwrap();
    assert_eq!(audit["type"], "system.crl_update");
    assert_eq!(audit["success"], true);
    assert_eq!(audit["total_entries"], 2);
    assert_eq!(audit["added_entries"], 1);
    assert_eq!(audit["removed_entries"], 1);
    let list = published(&outs).pop().unwrap();
    let serials: Vec<_> = list.entries.iter().map(|e| e.serial.as_str()).collect();
    assert_eq!(serials, ["09", "0B", "0C"]);
}

#[test]
fn an_expired_crl_raises_its_alarm_when_ingested() {
    let ca = root("Expired Root");
    let t0 = Instant::now();
    let config = CrlConfig::new(&[A]).unwrap().with_backoff_secs(60).unwrap();
    let mut m = CrlManager::new(
        config,
        vec![Certificate::from_pem(&ca.pem()).unwrap()],
        t0,
        NOW,
    );
    m.handle_timeout(t0);
    drain(&mut m);
    // thisUpdate 10 days ago, nextUpdate 3 days ago.
    let stale = crl(&ca, &[5], NOW - 10 * DAY, 1);
    assert!(m.handle_fetched(A, &stale, t0));
    let outs = drain(&mut m);
    // Its revocations are merged (they stand), but the alarm is raised.
    let list = published(&outs).pop().expect("published");
    assert_eq!(list.entries.len(), 1);
    assert_eq!(alarms(&outs), vec![(A.to_string(), true)]);
    let reason = outs
        .iter()
        .find_map(|o| match o {
            Output::Alarm { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .unwrap();
    assert!(reason.contains("expired"), "{reason}");
    let st = &m.status()[0];
    assert!(st.alarm && st.last_error.as_deref() == Some(reason.as_str()));
    // Retried on the failure schedule, not after the polling interval.
    assert_eq!(m.poll_timeout(), Some(t0 + Duration::from_secs(60)));
    // The same stale CRL again: the alarm stays (no new output), backoff doubles.
    let t1 = t0 + Duration::from_secs(60);
    m.handle_timeout(t1);
    assert_eq!(fetches(&drain(&mut m)), vec![A.to_string()]);
    assert!(m.handle_fetched(A, &stale, t1));
    assert!(alarms(&drain(&mut m)).is_empty());
    assert_eq!(m.poll_timeout(), Some(t1 + Duration::from_secs(120)));
    // A current CRL clears it.
    let t2 = t1 + Duration::from_secs(120);
    m.handle_timeout(t2);
    drain(&mut m);
    assert!(m.handle_fetched(A, &crl(&ca, &[5], NOW, 2), t2));
    assert_eq!(alarms(&drain(&mut m)), vec![(A.to_string(), false)]);
}

#[test]
fn a_restarted_manager_continues_from_the_saved_status() {
    let ca = root("Restart Root");
    let ca_cert = Certificate::from_pem(&ca.pem()).unwrap();
    let config = || {
        CrlConfig::new(&[A, B])
            .unwrap()
            .with_polling_hours(24)
            .unwrap()
            .with_backoff_secs(60)
            .unwrap()
    };
    let t0 = Instant::now();
    let mut m = CrlManager::new(config(), vec![ca_cert.clone()], t0, NOW);
    m.handle_timeout(t0);
    drain(&mut m);
    let body = crl(&ca, &[3], NOW - DAY, 1);
    m.handle_fetched(A, &body, t0);
    m.handle_fetch_failed(B, "refused", t0);
    let t1 = t0 + Duration::from_secs(60);
    m.handle_timeout(t1);
    drain(&mut m);
    m.handle_fetch_failed(B, "refused", t1);
    drain(&mut m);
    let saved = m.status();
    assert_eq!(saved[1].next_fetch, Some(NOW + 60 + 120));
    // Through the file format (serde), as `ssr crl watch` persists it.
    let json = serde_json::to_string(&saved).unwrap();
    let saved: Vec<ssr_pki::crl_manager::SourceStatus> = serde_json::from_str(&json).unwrap();

    // A new process 160 s after the first started (another Instant origin).
    let u0 = NOW + 160;
    let t0 = Instant::now() + Duration::from_secs(1000);
    let mut m = CrlManager::new(config(), vec![ca_cert], t0, u0);
    m.restore(A, &body).unwrap();
    for s in &saved {
        assert!(m.restore_status(s, t0));
    }
    // A is not refetched before its polling interval; B is retried when it was due,
    // and its next failure continues the doubling (a third failure waits 240 s).
    m.handle_timeout(t0);
    assert!(drain(&mut m).is_empty(), "nothing due at restart");
    assert_eq!(m.poll_timeout(), Some(t0 + Duration::from_secs(20)));
    m.handle_timeout(t0 + Duration::from_secs(20));
    assert_eq!(fetches(&drain(&mut m)), vec![B.to_string()]);
    m.handle_fetch_failed(B, "refused", t0 + Duration::from_secs(20));
    let outs = drain(&mut m);
    assert!(alarms(&outs).is_empty(), "the alarm was raised already");
    let st = m.status();
    assert_eq!(st[1].consecutive_failures, 3);
    assert_eq!(st[1].next_fetch, Some(u0 + 20 + 240));
    assert_eq!(st[0].next_fetch, Some(NOW + 24 * 3600));
}

#[test]
fn https_points_are_fetched_and_ldap_points_reported_without_dropping_the_others() {
    let (ok, refused) = split_supported(&[
        "ldap://dir.example/cn=CA?certificateRevocationList",
        "http://crl.example/ca.crl",
        "https://crl.example/ca.crl",
    ]);
    assert_eq!(
        ok,
        ["http://crl.example/ca.crl", "https://crl.example/ca.crl"]
    );
    assert_eq!(refused.len(), 1);
    assert!(refused[0].0.starts_with("ldap://"));
    assert!(refused[0].1.to_string().contains("http:// or https://"));
    // An https point is scheduled and handed to the fetcher like any other.
    let t0 = Instant::now();
    let mut m = CrlManager::new(CrlConfig::new(&ok).unwrap(), Vec::new(), t0, NOW);
    m.handle_timeout(t0);
    assert_eq!(fetches(&drain(&mut m)), ok);
}

#[test]
fn unanswered_fetch_times_out_and_late_answers_are_ignored() {
    let ca = root("Timeout Root");
    let t0 = Instant::now();
    let config = CrlConfig::new(&[A])
        .unwrap()
        .with_fetch_timeout_secs(30)
        .unwrap();
    let mut m = CrlManager::new(
        config,
        vec![Certificate::from_pem(&ca.pem()).unwrap()],
        t0,
        NOW,
    );
    m.handle_timeout(t0);
    drain(&mut m);
    assert_eq!(m.poll_timeout(), Some(t0 + Duration::from_secs(30)));
    m.handle_timeout(t0 + Duration::from_secs(30));
    let outs = drain(&mut m);
    assert_eq!(alarms(&outs), vec![(A.to_string(), true)]);
    // The answer arriving after the timeout is not used.
    assert!(!m.handle_fetched(A, &crl(&ca, &[1], NOW, 1), t0 + Duration::from_secs(31)));
    // Answers for a URL never asked for are not used either.
    assert!(!m.handle_fetched("http://other.test/x.crl", b"junk", t0));
}

#[test]
fn bad_crls_are_ingestion_failures() {
    let ca = root("Good Root");
    let rogue = root("Good Root"); // same name, other key
    let other = root("Other Root");
    let t0 = Instant::now();
    let mut m = CrlManager::new(
        CrlConfig::new(&[A]).unwrap(),
        vec![Certificate::from_pem(&ca.pem()).unwrap()],
        t0,
        NOW,
    );
    let mut t = t0;
    for (body, why) in [
        (b"not a crl".to_vec(), "malformed"),
        (crl(&rogue, &[1], NOW, 1), "signature"),
        (crl(&other, &[1], NOW, 1), "not a trusted CA"),
    ] {
        m.handle_timeout(t);
        assert_eq!(fetches(&drain(&mut m)), vec![A.to_string()]);
        assert!(m.handle_fetched(A, &body, t));
        let outs = drain(&mut m);
        assert!(published(&outs).is_empty(), "{why}");
        let status = &m.status()[0];
        assert!(status.alarm, "{why}");
        assert!(status.last_error.is_some(), "{why}");
        t = m.poll_timeout().unwrap();
    }
    assert_eq!(m.counters().crl_fetch_success, 3);
    assert_eq!(m.counters().crl_ingestion_failure, 3);
    assert_eq!(m.counters().crl_ingestion_success, 0);

    // A good CRL, then a replayed older one (lower thisUpdate) is refused.
    m.handle_timeout(t);
    drain(&mut m);
    assert!(m.handle_fetched(A, &crl(&ca, &[5], NOW, 2), t));
    assert_eq!(alarms(&drain(&mut m)), vec![(A.to_string(), false)]);
    m.refresh_all(t);
    m.handle_timeout(t);
    drain(&mut m);
    assert!(m.handle_fetched(A, &crl(&ca, &[], NOW - DAY, 1), t));
    let outs = drain(&mut m);
    assert!(published(&outs).is_empty());
    assert_eq!(alarms(&outs), vec![(A.to_string(), true)]);
    assert_eq!(m.master_list(NOW).entries.len(), 1);
}

#[test]
fn config_is_validated() {
    assert!(CrlConfig::new(&["ftp://x/y"]).is_err());
    assert!(CrlConfig::new(&["http://"]).is_err());
    assert!(CrlConfig::new(&["http://h/a b"]).is_err());
    let c = CrlConfig::new(&[A, A]).unwrap();
    assert_eq!(c.urls().len(), 1);
    assert_eq!(c.polling_interval(), Duration::from_secs(24 * 3600));
    assert_eq!(c.backoff_interval(), Duration::from_secs(60));
    assert!(c.clone().with_polling_hours(0).is_err());
    assert!(c.clone().with_backoff_secs(0).is_err());
}

#[test]
fn master_list_parser_is_strict() {
    let ok = r#"{"version":1,"generated_at":5,"entries":[]}"#;
    assert!(MasterList::from_json(ok).is_ok());
    for bad in [
        r#"{"version":2,"generated_at":5,"entries":[]}"#,
        r#"{"version":1,"generated_at":5,"entries":[],"x":1}"#,
        r#"{"version":1,"generated_at":5,"entries":[]} trailing"#,
        r#"{"version":1,"generated_at":5,"entries":[{"issuer":"b","serial":"01","revoked_at":1,"source":"u"},{"issuer":"a","serial":"01","revoked_at":1,"source":"u"}]}"#,
        "",
    ] {
        assert!(MasterList::from_json(bad).is_err(), "{bad}");
    }
}

#[cfg(feature = "http")]
mod over_http {
    use super::*;
    use ssr_pki::http::{FetchOptions, drive};
    use ssr_testkit::http::{Fault, HttpServer, StaticFiles};

    #[test]
    fn fetches_from_real_servers_one_failing() {
        let ca = root("HTTP Root");
        let good_files = StaticFiles::new();
        good_files.insert("/good.crl", crl(&ca, &[3, 4], NOW - DAY, 1));
        let good = HttpServer::start(good_files.clone()).unwrap();
        let failing_files = StaticFiles::new();
        // This one serves PEM (`X509 CRL`), the other DER.
        let pem = ssr_pki::Crl::from_der(&crl(&ca, &[8], NOW - DAY, 1))
            .unwrap()
            .to_pem();
        failing_files.insert("/bad.crl", pem.into_bytes());
        let failing = HttpServer::start(failing_files).unwrap();
        failing.set_faults(|_req, _n| Some(Fault::Status(503)));

        let good_url = format!("{}/good.crl", good.url());
        let bad_url = format!("{}/bad.crl", failing.url());
        let config = CrlConfig::new(&[good_url.clone(), bad_url.clone()]).unwrap();
        let t0 = Instant::now();
        let mut m = CrlManager::new(
            config,
            vec![Certificate::from_pem(&ca.pem()).unwrap()],
            t0,
            NOW,
        );
        let opts = FetchOptions {
            timeout: Duration::from_secs(10),
            ..FetchOptions::default()
        };
        // The virtual clock stands still while the real fetches run.
        let outs = drive(&mut m, &opts, || t0);
        assert_eq!(alarms(&outs), vec![(bad_url.clone(), true)]);
        let list = published(&outs).pop().unwrap();
        let serials: Vec<_> = list.entries.iter().map(|e| e.serial.as_str()).collect();
        assert_eq!(serials, ["03", "04"]);
        let bad = m.status().into_iter().find(|s| s.url == bad_url).unwrap();
        assert_eq!(bad.last_error.as_deref(), Some("HTTP status 503"));
        assert_eq!(good.stats().requests, 1);

        // The failing server recovers; after the backoff the alarm
        // clears and its CRL joins the list.
        failing.clear_faults();
        let t1 = m.poll_timeout().unwrap();
        assert_eq!(t1, t0 + Duration::from_secs(60));
        let outs = drive(&mut m, &opts, || t1);
        assert_eq!(alarms(&outs), vec![(bad_url, false)]);
        let list = published(&outs).pop().unwrap();
        assert_eq!(list.entries.len(), 3);
        assert_eq!(good.stats().requests, 1, "the good URL is not due yet");
    }

    #[test]
    fn truncated_and_missing_bodies_fail() {
        let ca = root("Trunc Root");
        let files = StaticFiles::new();
        let body = crl(&ca, &[1, 2, 3], NOW, 1);
        files.insert("/c.crl", body.clone());
        let server = HttpServer::start(files).unwrap();
        server.set_faults(|_req, _n| Some(Fault::Truncate(20)));
        let opts = FetchOptions::default();
        let url = format!("{}/c.crl", server.url());
        let err = ssr_pki::http::fetch(&url, &opts).unwrap_err().to_string();
        assert!(err.contains("truncated body"), "{err}");
        server.clear_faults();
        assert_eq!(ssr_pki::http::fetch(&url, &opts).unwrap(), body);
        let err = ssr_pki::http::fetch(&format!("{}/none.crl", server.url()), &opts)
            .unwrap_err()
            .to_string();
        assert!(err.contains("HTTP status 404"), "{err}");
        let small = FetchOptions {
            max_body: 10,
            ..opts
        };
        let err = ssr_pki::http::fetch(&url, &small).unwrap_err().to_string();
        assert!(err.contains("larger than 10 bytes"), "{err}");
        // Nothing listens on port 1 (tcpmux, privileged; a port freed just now could be
        // taken by another test's server before we connect).
        let err = ssr_pki::http::fetch("http://127.0.0.1:1/x", &opts)
            .unwrap_err()
            .to_string();
        assert!(err.contains("connect"), "{err}");
    }
}

#[cfg(feature = "http")]
mod over_https {
    use super::*;
    use ssr_pki::http::{FetchOptions, crl_client, drive_with, fetch_with};
    use ssr_testkit::http::{HttpServer, StaticFiles, TlsIdentity};

    /// An `https://` distribution point through the shared client: trusted with the
    /// configured CA bundle, refused (clear TLS error, nothing published) without.
    #[test]
    fn https_points_need_the_configured_ca() {
        let ca = root("HTTPS Root");
        let files = StaticFiles::new();
        let body = crl(&ca, &[5], NOW - DAY, 1);
        files.insert("/c.crl", body.clone());
        let id = TlsIdentity::generate(&["localhost"]).unwrap();
        let server = HttpServer::start_tls(files, &id).unwrap();
        let url = format!("{}/c.crl", server.url());
        let opts = FetchOptions::default();
        let trusted = crl_client(Some(id.ca_pem().as_bytes().to_vec()), vec![]).unwrap();
        assert_eq!(fetch_with(&trusted, &url, &opts).unwrap(), body);

        let other = TlsIdentity::generate(&["localhost"]).unwrap();
        let untrusted = crl_client(Some(other.ca_pem().as_bytes().to_vec()), vec![]).unwrap();
        let err = fetch_with(&untrusted, &url, &opts).unwrap_err().to_string();
        assert!(err.contains("TLS") && err.contains("certificate"), "{err}");
        let err = ssr_pki::http::fetch(&url, &opts).unwrap_err().to_string();
        assert!(err.contains("CA bundle"), "{err}");

        let t0 = Instant::now();
        let mut m = CrlManager::new(
            CrlConfig::new(std::slice::from_ref(&url)).unwrap(),
            vec![Certificate::from_pem(&ca.pem()).unwrap()],
            t0,
            NOW,
        );
        let outs = drive_with(&mut m, &untrusted, &opts, || t0);
        assert!(published(&outs).is_empty());
        assert_eq!(alarms(&outs), vec![(url.clone(), true)]);
        let t1 = m.poll_timeout().unwrap();
        let outs = drive_with(&mut m, &trusted, &opts, || t1);
        assert_eq!(published(&outs).pop().unwrap().entries.len(), 1);
    }
}

mod schedule_properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any sequence of successes, failures and timeouts: the next attempt is never
        /// sooner than the backoff interval nor later than the polling interval (or
        /// the fetch timeout while in flight), and the alarm is raised exactly when
        /// the last attempt failed, with one output per change.
        #[test]
        fn bounded_schedule_and_alarm_tracks_last_attempt(
            events in proptest::collection::vec(0u8..3, 1..40),
            polling_hours in 1u32..48,
            backoff_secs in 1u32..600,
        ) {
            let ca = root("Prop Root");
            let body = crl(&ca, &[1], NOW, 1);
            let config = CrlConfig::new(&[A])
                .unwrap()
                .with_polling_hours(polling_hours)
                .unwrap()
                .with_backoff_secs(backoff_secs)
                .unwrap();
            let polling = config.polling_interval();
            let backoff = config.backoff_interval();
            let t0 = Instant::now();
            let mut m = CrlManager::new(config, vec![Certificate::from_pem(&ca.pem()).unwrap()], t0, NOW);
            let mut alarm = false;
            for e in events {
                let mut t = m.poll_timeout().unwrap();
                m.handle_timeout(t);
                prop_assert_eq!(fetches(&drain(&mut m)), vec![A.to_string()]);
                // The CRL expires 7 days after NOW: ingesting it later raises the alarm.
                let unix_t = NOW + i64::try_from((t - t0).as_secs()).unwrap();
                let failed = match e {
                    0 => !m.handle_fetched(A, &body, t) || unix_t > NOW + 7 * DAY,
                    1 => { m.handle_fetch_failed(A, "boom", t); true }
                    _ => {
                        let deadline = m.poll_timeout().unwrap();
                        prop_assert_eq!(deadline, t + Duration::from_secs(30));
                        t = deadline;
                        m.handle_timeout(t);
                        true
                    }
                };
                let outs = drain(&mut m);
                let changes = alarms(&outs);
                if failed != alarm {
                    prop_assert_eq!(changes, vec![(A.to_string(), failed)]);
                } else {
                    prop_assert!(changes.is_empty());
                }
                alarm = failed;
                prop_assert_eq!(m.status()[0].alarm, alarm);
                let wait = m.poll_timeout().unwrap() - t;
                prop_assert!(wait >= backoff.min(polling) && wait <= polling, "{:?}", wait);
            }
        }
    }
}
