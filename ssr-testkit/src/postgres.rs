//! A throwaway PostgreSQL cluster per test (Debian's `postgresql` package).

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::{free_port_pair, is_root, run, wait_until};

/// How long the server gets to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A PostgreSQL server on 127.0.0.1 with its cluster in a temporary directory
/// (`initdb`, trust authentication, superuser `postgres`), its Unix socket in that
/// directory too; stopped (fast shutdown, then killed) and removed on drop.
///
/// PostgreSQL refuses to run as root: as root the server runs as the `postgres` user
/// (`setpriv`), and the directory is handed to that user.
///
/// ```no_run
/// let pg = ssr_testkit::Postgres::start()?;
/// println!("connect with: {}", pg.params());
/// pg.psql("CREATE TABLE t (x int)")?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Postgres {
    child: Option<Child>,
    port: u16,
    bin: PathBuf,
    dir: TempDir,
}

/// The newest `/usr/lib/postgresql/<version>/bin` holding `initdb`.
fn bin_dir() -> io::Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "no PostgreSQL under /usr/lib/postgresql (apt-get install postgresql): {e}"
                ),
            )
        })?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "no initdb under /usr/lib/postgresql/*/bin (apt-get install postgresql)",
        )
    })
}

/// The uid and gid of the `postgres` user.
fn postgres_ids() -> io::Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"postgres") && f.len() > 3)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                .flatten()
        })
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no postgres user"))
}

/// `cmd` run as the `postgres` user when we are root.
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--clear-groups",
            "--",
        ])
        .arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl Postgres {
    /// Creates a cluster and starts its server on a free port.
    pub fn start() -> io::Result<Postgres> {
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new().prefix("pg-").tempdir()?;
        if is_root() {
            let (uid, gid) = postgres_ids()?;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
        }
        let data = dir.path().join("data");
        run(as_postgres(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "--username=postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .stdout(Stdio::null()))?;
        let mut last_error = None;
        for _ in 0..5 {
            let port = free_port_pair()?;
            let log = File::create(dir.path().join(format!("postgres-{port}.log")))?;
            let mut child = as_postgres(&bin.join("postgres"))
                .arg("-D")
                .arg(&data)
                .arg("-p")
                .arg(port.to_string())
                .arg("-k")
                .arg(dir.path())
                .args([
                    "-c",
                    &format!("listen_addresses={}", Ipv4Addr::LOCALHOST),
                    "-c",
                    "fsync=off",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| io::Error::new(e.kind(), format!("cannot start postgres: {e}")))?;
            let ready = wait_until(START_TIMEOUT, || {
                matches!(child.try_wait(), Ok(Some(_)))
                    || Command::new(bin.join("pg_isready"))
                        .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                        .status()
                        .is_ok_and(|s| s.success())
            });
            if ready && child.try_wait()?.is_none() {
                return Ok(Postgres {
                    child: Some(child),
                    port,
                    bin,
                    dir,
                });
            }
            let _ = child.kill();
            let _ = child.wait();
            last_error = Some(
                std::fs::read_to_string(dir.path().join(format!("postgres-{port}.log")))
                    .unwrap_or_default(),
            );
        }
        Err(io::Error::other(format!(
            "postgres did not start: {}",
            last_error.unwrap_or_default().trim()
        )))
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// libpq connection parameters for database `postgres` as user `postgres`.
    pub fn params(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    /// Runs `sql` with `psql` and returns its unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> io::Result<String> {
        let out = run(Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg(sql))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The cluster's directory (data in `data/`, the server log beside it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Fast shutdown (SIGINT) lets the server stop its backends; kill if slow.
            let _ = Command::new("kill")
                .arg("-INT")
                .arg(child.id().to_string())
                .status();
            if !wait_until(Duration::from_secs(10), || {
                matches!(child.try_wait(), Ok(Some(_)))
            }) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}
