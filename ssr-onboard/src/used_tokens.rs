//! Used-token stores (feature `https`): where a conductor records the id (`jti`) of
//! every token it accepted, so that each token is used once.
//!
//! The interface is [`UsedTokens`] (the conductor core calls it when it accepts a
//! `hello`); two implementations:
//!
//! - [`FileUsedTokens`], the embedded default for a single conductor node: JSON lines
//!   `{"jti":"…","exp":N}`, each appended and fsynced before the token is accepted.
//! - `PgUsedTokens` (feature `postgres`), for two or more conductor nodes sharing one
//!   PostgreSQL database: one `INSERT … ON CONFLICT DO NOTHING` per token id on a
//!   primary key, so of two nodes racing the same token exactly one inserts the row
//!   and accepts it.
//!
//! [`open`] picks the store from the conductor configuration.
//!
//! The conductor's onboarding records (the key each router proved, see
//! [`crate::record`]) live beside the used tokens: [`OnboardingRecords`], in the
//! `router-keys` file ([`FileOnboardingRecords`]) or, with `used-tokens-database`, in
//! the same database (`PgOnboardingRecords`, table `ssr_onboarding_records`), so
//! every node of an HA group checks certificate requests against the same records.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::Error;
use crate::conductor::MemoryUsedTokens;
pub use crate::conductor::UsedTokens;
use crate::config::{ConductorConfig, UsedTokensConfig};
use crate::record::OnboardingRecord;

fn storage(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Storage {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Opens the store the configuration names.
pub fn open(cfg: &UsedTokensConfig) -> Result<Box<dyn UsedTokens + Send>, Error> {
    match cfg {
        UsedTokensConfig::File(path) => Ok(Box::new(FileUsedTokens::open(path)?)),
        #[cfg(feature = "postgres")]
        UsedTokensConfig::Postgres(params) => Ok(Box::new(PgUsedTokens::connect(params)?)),
        #[cfg(not(feature = "postgres"))]
        UsedTokensConfig::Postgres(_) => Err(Error::Config {
            file: "conductor-config.json".into(),
            field: "used-tokens-database".into(),
            reason: "this build has no PostgreSQL support (ssr-onboard feature `postgres`)".into(),
        }),
    }
}

/// Where the conductor keeps its onboarding records (the key each router proved).
pub trait OnboardingRecords: Send {
    /// Appends a record, durably, before the router is told it is welcome.
    fn append(&mut self, record: &OnboardingRecord) -> Result<(), Error>;
    /// The latest record for `router` (a router onboarded again has a new key).
    fn latest(&mut self, router: &str) -> Result<Option<OnboardingRecord>, Error>;
}

/// Opens the onboarding-record store the configuration names: the database with
/// `used-tokens-database` (shared by the nodes), else the `router-keys` file, else
/// none.
pub fn open_records(cfg: &ConductorConfig) -> Result<Option<Box<dyn OnboardingRecords>>, Error> {
    match (&cfg.used_tokens, &cfg.router_keys) {
        (UsedTokensConfig::Postgres(_), Some(_)) => Err(Error::Config {
            file: "conductor-config.json".into(),
            field: "router-keys".into(),
            reason: "with used-tokens-database the records are kept in the database".into(),
        }),
        #[cfg(feature = "postgres")]
        (UsedTokensConfig::Postgres(params), None) => {
            Ok(Some(Box::new(PgOnboardingRecords::connect(params)?)))
        }
        #[cfg(not(feature = "postgres"))]
        (UsedTokensConfig::Postgres(_), None) => Err(Error::Config {
            file: "conductor-config.json".into(),
            field: "used-tokens-database".into(),
            reason: "this build has no PostgreSQL support (ssr-onboard feature `postgres`)".into(),
        }),
        (UsedTokensConfig::File(_), Some(path)) => {
            Ok(Some(Box::new(FileOnboardingRecords { path: path.clone() })))
        }
        (UsedTokensConfig::File(_), None) => Ok(None),
    }
}

/// Onboarding records as JSON lines in a file (`router-keys`, 0600, fsynced).
#[derive(Debug)]
pub struct FileOnboardingRecords {
    path: PathBuf,
}

impl OnboardingRecords for FileOnboardingRecords {
    fn append(&mut self, record: &OnboardingRecord) -> Result<(), Error> {
        crate::https::append_line(&self.path, &record.to_json_line())
    }

    fn latest(&mut self, router: &str) -> Result<Option<OnboardingRecord>, Error> {
        let all = crate::https::read_records(&self.path)?;
        Ok(crate::record::latest(&all, router).cloned())
    }
}

/// The used-token register persisted as JSON lines `{"jti":"…","exp":N}` (mode 0600),
/// each line written and fsynced before the token is accepted.
#[derive(Debug)]
pub struct FileUsedTokens {
    path: PathBuf,
    mem: MemoryUsedTokens,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct UsedLine {
    jti: String,
    exp: u64,
}

impl FileUsedTokens {
    /// Opens (or starts) the register; a line that does not parse is an error naming
    /// the line (a damaged register must not silently re-enable tokens).
    pub fn open(path: &Path) -> Result<Self, Error> {
        let mut mem = MemoryUsedTokens::default();
        match File::open(path) {
            Ok(f) => {
                for (i, line) in BufReader::new(f).lines().enumerate() {
                    let line = line.map_err(|e| storage(path, e))?;
                    if line.is_empty() {
                        continue;
                    }
                    let l: UsedLine = serde_json::from_str(&line)
                        .map_err(|e| storage(path, format!("line {}: {e}", i + 1)))?;
                    mem.insert(l.jti, l.exp);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(storage(path, e)),
        }
        Ok(Self {
            path: path.to_owned(),
            mem,
        })
    }

    /// Whether `jti` was used.
    pub fn contains(&self, jti: &str) -> bool {
        self.mem.contains(jti)
    }
}

impl UsedTokens for FileUsedTokens {
    fn consume(&mut self, jti: &str, exp: u64) -> Result<bool, Error> {
        if self.mem.contains(jti) {
            return Ok(false);
        }
        let line = serde_json::to_string(&UsedLine {
            jti: jti.to_owned(),
            exp,
        })
        .map_err(|e| storage(&self.path, e))?;
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(|e| storage(&self.path, e))?;
        f.write_all(format!("{line}\n").as_bytes())
            .and_then(|()| f.sync_data())
            .map_err(|e| storage(&self.path, e))?;
        self.mem.consume(jti, exp)
    }
}

/// The used-token store in PostgreSQL (feature `postgres`), shared by every conductor
/// node of an HA group.
///
/// Table `ssr_used_tokens (jti TEXT PRIMARY KEY, exp BIGINT, used_at TIMESTAMPTZ)`,
/// created on first connect. A token is consumed by a single
/// `INSERT … ON CONFLICT (jti) DO NOTHING`: the database's unique index decides which
/// of two racing nodes gets it (one row inserted: accepted; none: already used). A
/// lost connection is re-opened on the next token; while the database cannot be
/// reached every token is refused (never accepted unrecorded).
#[cfg(feature = "postgres")]
pub struct PgUsedTokens {
    params: zeroize::Zeroizing<String>,
    client: postgres::Client,
}

#[cfg(feature = "postgres")]
impl std::fmt::Debug for PgUsedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection parameters may hold a password.
        f.debug_struct("PgUsedTokens").finish_non_exhaustive()
    }
}

#[cfg(feature = "postgres")]
const PG: &str = "used-tokens-database";

#[cfg(feature = "postgres")]
fn pg_err(e: &postgres::Error) -> Error {
    // `Display` of a server error is only its message; add the SQLSTATE and detail.
    let reason = match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    };
    Error::Storage {
        path: PG.into(),
        reason,
    }
}

/// Connects and creates the tables (used tokens, onboarding records) if they are
/// missing: one schema for every store a node opens.
#[cfg(feature = "postgres")]
fn pg_connect(params: &str) -> Result<postgres::Client, Error> {
    let mut client =
        postgres::Client::connect(params, postgres::NoTls).map_err(|e| Error::Storage {
            path: PG.into(),
            reason: format!("cannot connect: {e}"),
        })?;
    // The advisory lock serialises nodes creating the tables at the same time (a
    // concurrent CREATE TABLE IF NOT EXISTS can fail on the catalog's index).
    client
        .batch_execute(
            "BEGIN;
             SELECT pg_advisory_xact_lock(5389021);
             CREATE TABLE IF NOT EXISTS ssr_used_tokens (
                 jti TEXT PRIMARY KEY,
                 exp BIGINT NOT NULL,
                 used_at TIMESTAMPTZ NOT NULL DEFAULT now()
             );
             CREATE TABLE IF NOT EXISTS ssr_onboarding_records (
                 seq BIGSERIAL PRIMARY KEY,
                 router TEXT NOT NULL,
                 key TEXT NOT NULL,
                 jti TEXT NOT NULL,
                 time BIGINT NOT NULL
             );
             COMMIT;",
        )
        .map_err(|e| pg_err(&e))?;
    Ok(client)
}

/// Onboarding records in PostgreSQL (feature `postgres`), shared by the nodes:
/// table `ssr_onboarding_records`, the highest `seq` per router is the latest.
#[cfg(feature = "postgres")]
pub struct PgOnboardingRecords {
    params: zeroize::Zeroizing<String>,
    client: postgres::Client,
}

#[cfg(feature = "postgres")]
impl std::fmt::Debug for PgOnboardingRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOnboardingRecords")
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "postgres")]
impl PgOnboardingRecords {
    /// Connects (see [`PgUsedTokens::connect`]).
    pub fn connect(params: &str) -> Result<Self, Error> {
        Ok(Self {
            client: pg_connect(params)?,
            params: zeroize::Zeroizing::new(params.to_owned()),
        })
    }

    fn client(&mut self) -> Result<&mut postgres::Client, Error> {
        if self.client.is_closed() {
            self.client = pg_connect(&self.params)?;
        }
        Ok(&mut self.client)
    }
}

#[cfg(feature = "postgres")]
impl OnboardingRecords for PgOnboardingRecords {
    fn append(&mut self, r: &OnboardingRecord) -> Result<(), Error> {
        let time = i64::try_from(r.time).unwrap_or(i64::MAX);
        self.client()?
            .execute(
                "INSERT INTO ssr_onboarding_records (router, key, jti, time) VALUES ($1, $2, $3, $4)",
                &[&r.router, &r.key, &r.jti, &time],
            )
            .map_err(|e| pg_err(&e))?;
        Ok(())
    }

    fn latest(&mut self, router: &str) -> Result<Option<OnboardingRecord>, Error> {
        let row = self
            .client()?
            .query_opt(
                "SELECT router, key, jti, time FROM ssr_onboarding_records
                 WHERE router = $1 ORDER BY seq DESC LIMIT 1",
                &[&router],
            )
            .map_err(|e| pg_err(&e))?;
        Ok(row.map(|row| {
            let time: i64 = row.get(3);
            OnboardingRecord {
                router: row.get(0),
                key: row.get(1),
                jti: row.get(2),
                time: u64::try_from(time).unwrap_or(0),
            }
        }))
    }
}

#[cfg(feature = "postgres")]
impl PgUsedTokens {
    /// Connects with libpq-style `params` (`host=… port=… user=… dbname=…` or a
    /// `postgresql://` URL) and creates the tables if they are missing.
    pub fn connect(params: &str) -> Result<Self, Error> {
        let client = pg_connect(params)?;
        Ok(Self {
            params: zeroize::Zeroizing::new(params.to_owned()),
            client,
        })
    }

    /// Whether `jti` was used (by any node).
    pub fn contains(&mut self, jti: &str) -> Result<bool, Error> {
        self.reconnect_if_closed()?;
        let row = self
            .client
            .query_one(
                "SELECT count(*) FROM ssr_used_tokens WHERE jti = $1",
                &[&jti],
            )
            .map_err(|e| pg_err(&e))?;
        let n: i64 = row.get(0);
        Ok(n > 0)
    }

    fn reconnect_if_closed(&mut self) -> Result<(), Error> {
        if self.client.is_closed() {
            self.client = pg_connect(&self.params)?;
        }
        Ok(())
    }
}

#[cfg(feature = "postgres")]
impl UsedTokens for PgUsedTokens {
    fn consume(&mut self, jti: &str, exp: u64) -> Result<bool, Error> {
        self.reconnect_if_closed()?;
        let exp = i64::try_from(exp).unwrap_or(i64::MAX);
        let inserted = self
            .client
            .execute(
                "INSERT INTO ssr_used_tokens (jti, exp) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING",
                &[&jti, &exp],
            )
            .map_err(|e| pg_err(&e))?;
        Ok(inserted == 1)
    }
}
