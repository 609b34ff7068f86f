//! A software TPM per test.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::{free_port_pair, wait_until};

/// How long swtpm gets to open its ports.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The swtpm control channel's `CMD_SHUTDOWN` (swtpm's `tpm_ioctl.h`).
const CMD_SHUTDOWN: u32 = 3;

/// A running `swtpm socket --tpm2` on 127.0.0.1, killed on drop.
///
/// ```no_run
/// let tpm = ssr_testkit::Swtpm::start()?;
/// println!("TCTI for tss-esapi: {}", tpm.tcti());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Swtpm {
    child: Option<Child>,
    port: u16,
    state: State,
    log: Option<PathBuf>,
}

#[derive(Debug)]
enum State {
    Owned(TempDir),
    Borrowed(PathBuf),
}

impl State {
    fn path(&self) -> &Path {
        match self {
            State::Owned(dir) => dir.path(),
            State::Borrowed(path) => path,
        }
    }
}

/// Options for [`Swtpm`]: an existing state directory (a "reboot") and a command log.
#[derive(Debug, Default)]
pub struct SwtpmBuilder {
    state_dir: Option<PathBuf>,
    log_level: Option<u32>,
}

impl SwtpmBuilder {
    /// Reuse this state directory (e.g. one returned by [`Swtpm::stop`]) instead of a
    /// fresh one: persistent objects and NV indices survive, as across a reboot.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// Write swtpm's log at this level to `swtpm.log` in the state directory; level 20
    /// and above dump every command and response in hex (see [`Swtpm::log`]).
    pub fn log_level(mut self, level: u32) -> Self {
        self.log_level = Some(level);
        self
    }

    /// Starts swtpm on a free port pair, retrying when another process raced us to it.
    pub fn start(self) -> io::Result<Swtpm> {
        let state = match self.state_dir {
            Some(dir) => State::Borrowed(dir),
            None => State::Owned(tempfile::Builder::new().prefix("swtpm-").tempdir()?),
        };
        let mut last_error = None;
        for _ in 0..5 {
            let port = free_port_pair()?;
            let log = self.log_level.map(|_| state.path().join("swtpm.log"));
            let mut cmd = Command::new("swtpm");
            cmd.arg("socket")
                .arg("--tpm2")
                .arg("--tpmstate")
                .arg(format!("dir={}", state.path().display()))
                .arg("--server")
                .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
                .arg("--flags")
                .arg("not-need-init,startup-clear")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            if let (Some(level), Some(log)) = (self.log_level, &log) {
                cmd.arg("--log")
                    .arg(format!("file={},level={level}", log.display()));
            }
            let mut child = cmd.spawn().map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot start swtpm (apt-get install swtpm): {e}"),
                )
            })?;
            // Ready when *this* swtpm listens on both ports: a connect alone could reach
            // another process that took one of them after `free_port_pair` probed it.
            let pid = child.id();
            let ready = wait_until(START_TIMEOUT, || {
                matches!(child.try_wait(), Ok(Some(_)))
                    || (listens_on(pid, port) && listens_on(pid, port + 1))
            });
            match child.try_wait()? {
                None if ready => {
                    return Ok(Swtpm {
                        child: Some(child),
                        port,
                        state,
                        log,
                    });
                }
                None => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_error = Some(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("swtpm did not open ports {port}/{} in time", port + 1),
                    ));
                }
                Some(status) => {
                    let mut stderr = String::new();
                    if let Some(mut pipe) = child.stderr.take() {
                        let _ = pipe.read_to_string(&mut stderr);
                    }
                    last_error = Some(io::Error::other(format!(
                        "swtpm exited at start ({status}): {}",
                        stderr.trim()
                    )));
                }
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("swtpm did not start")))
    }
}

/// True when process `pid` holds a TCP socket listening on IPv4 `port` (the listening
/// sockets' inodes in /proc/net/tcp, matched against the process's /proc/<pid>/fd).
fn listens_on(pid: u32, port: u16) -> bool {
    let Ok(tcp) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let sockets = listening_socket_links(&tcp, port);
    if sockets.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .any(|link| sockets.iter().any(|s| link.as_os_str() == s.as_str()))
}

/// `socket:[<inode>]` for each socket of a /proc/net/tcp table in state LISTEN (`0A`)
/// on local port `port`.
fn listening_socket_links(proc_net_tcp: &str, port: u16) -> Vec<String> {
    proc_net_tcp
        .lines()
        .skip(1)
        .filter_map(|line| {
            // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
            let f: Vec<&str> = line.split_whitespace().collect();
            let (_, local_port) = f.get(1)?.split_once(':')?;
            let listening = *f.get(3)? == "0A";
            let inode = f.get(9)?;
            (listening && u16::from_str_radix(local_port, 16).ok()? == port)
                .then(|| format!("socket:[{inode}]"))
        })
        .collect()
}

impl Swtpm {
    /// A fresh TPM with its own temporary state directory.
    pub fn start() -> io::Result<Swtpm> {
        SwtpmBuilder::default().start()
    }

    /// Options: an existing state directory, a command log.
    pub fn builder() -> SwtpmBuilder {
        SwtpmBuilder::default()
    }

    /// The TCTI string for tss-esapi / tpm2-tools: `swtpm:host=127.0.0.1,port=P`.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// The command port (the control port is `port() + 1`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where swtpm keeps its state (NV, persistent objects).
    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    /// swtpm's log so far, when started with [`SwtpmBuilder::log_level`].
    pub fn log(&self) -> io::Result<String> {
        match &self.log {
            Some(path) => std::fs::read_to_string(path),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                "swtpm was started without a log",
            )),
        }
    }

    /// Shuts the TPM down cleanly (state saved) and returns its state directory when
    /// this fixture owned it, so the same TPM can be started again over it.
    pub fn stop(mut self) -> io::Result<Option<TempDir>> {
        self.shutdown()?;
        let state = std::mem::replace(&mut self.state, State::Borrowed(PathBuf::new()));
        Ok(match state {
            State::Owned(dir) => Some(dir),
            State::Borrowed(_) => None,
        })
    }

    fn shutdown(&mut self) -> io::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // Ask politely over the control channel so the state is flushed, then make sure.
        let polite = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port + 1)).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(&CMD_SHUTDOWN.to_be_bytes())?;
            let mut response = [0u8; 4];
            s.read_exact(&mut response)
        });
        let exited = polite.is_ok()
            && wait_until(Duration::from_secs(5), || {
                matches!(child.try_wait(), Ok(Some(_)))
            });
        if !exited {
            let _ = child.kill();
        }
        child.wait()?;
        Ok(())
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A raw TPM2_GetRandom(8) over the command port (swtpm's TCP channel carries bare
    /// TPM commands): proves a real TPM answers.
    fn get_random(port: u16) -> Vec<u8> {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        let cmd: [u8; 12] = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7b, 0, 8];
        s.write_all(&cmd).unwrap();
        let mut resp = vec![0u8; 10];
        s.read_exact(&mut resp).unwrap();
        let size = u32::from_be_bytes([resp[2], resp[3], resp[4], resp[5]]) as usize;
        resp.resize(size, 0);
        s.read_exact(&mut resp[10..]).unwrap();
        resp
    }

    #[test]
    fn answers_tpm_commands_and_dies_on_drop() {
        let tpm = Swtpm::start().unwrap();
        let port = tpm.port();
        assert!(tpm.tcti().ends_with(&format!("port={port}")));
        let resp = get_random(port);
        // TPM_ST_NO_SESSIONS, size 20, TPM_RC_SUCCESS, TPM2B of 8 random bytes.
        assert_eq!(&resp[..10], &[0x80, 0x01, 0, 0, 0, 20, 0, 0, 0, 0]);
        assert_eq!(&resp[10..12], &[0, 8]);
        drop(tpm);
        assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err());
    }

    #[test]
    fn listening_sockets_are_read_from_proc_net_tcp() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0000000000000000 100 0 0 10 0
";
        assert_eq!(listening_socket_links(table, 8080), ["socket:[4242]"]);
        assert_eq!(listening_socket_links(table, 8081), ["socket:[4444]"]);
        assert!(listening_socket_links(table, 8082).is_empty());
    }

    #[test]
    fn a_port_held_by_another_process_is_not_ours() {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(listens_on(std::process::id(), port));
        let other = ChildGuard(Command::new("sleep").arg("5").spawn().unwrap());
        assert!(!listens_on(other.0.id(), port));
        drop(listener);
        assert!(!listens_on(std::process::id(), port));
    }

    /// Kills the child on drop.
    struct ChildGuard(Child);
    impl Drop for ChildGuard {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn two_tpms_do_not_share_ports_or_state() {
        let a = Swtpm::start().unwrap();
        let b = Swtpm::start().unwrap();
        assert_ne!(a.port(), b.port());
        assert_ne!(a.state_dir(), b.state_dir());
    }

    #[test]
    fn restarts_over_its_state() {
        let tpm = Swtpm::builder().log_level(20).start().unwrap();
        get_random(tpm.port());
        assert!(tpm.log().unwrap().contains("80 01 00 00 00 0C 00 00 01 7B"));
        let state = tpm.stop().unwrap().unwrap();
        assert!(state.path().join("tpm2-00.permall").exists());
        let again = Swtpm::builder().state_dir(state.path()).start().unwrap();
        assert_eq!(get_random(again.port())[6..10], [0, 0, 0, 0]);
    }
}
