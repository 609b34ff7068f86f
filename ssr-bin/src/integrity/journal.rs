//! Logging to the systemd journal over its native protocol, and to stderr.
//!
//! A record is one datagram of `KEY=value` lines sent to journald's socket
//! (`/run/systemd/journal/socket`, configurable so tests can bind their own). A value
//! containing a newline uses the protocol's binary form: `KEY\n`, the value length as
//! a little-endian u64, the value, `\n`.
//!
//! Every record also goes to stderr as `integrity-handler: MESSAGE`, unless stderr is
//! itself connected to the journal (`JOURNAL_STREAM`, as under systemd) and the
//! datagram was delivered, so `journalctl -u integrity-handler` shows each line once.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

/// The journal's `SYSLOG_IDENTIFIER`.
pub const IDENTIFIER: &str = "integrity-handler";

/// The integrity-event line, exactly (journal `MESSAGE` and stderr).
pub const INTEGRITY_EVENT_MESSAGE: &str =
    "integrity-handler: Integrity event detected. A clean installation is required.";

const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// syslog priorities (`PRIORITY=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Priority {
    /// 0: journald broadcasts it to every console (`ForwardToWall=`).
    Emergency = 0,
    /// 3.
    Error = 3,
    /// 4.
    Warning = 4,
    /// 6.
    Info = 6,
}

/// One native-protocol record: `PRIORITY`, `SYSLOG_IDENTIFIER`, `MESSAGE`, then
/// `extra` fields. Keys must be journal field names (upper case, digits, `_`).
pub fn encode_record(priority: Priority, message: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + message.len());
    let priority = (priority as u8).to_string();
    let fields = [
        ("PRIORITY", priority.as_str()),
        ("SYSLOG_IDENTIFIER", IDENTIFIER),
        ("MESSAGE", message),
    ];
    for (key, value) in fields.iter().chain(extra) {
        out.extend_from_slice(key.as_bytes());
        if value.contains('\n') {
            out.push(b'\n');
            out.extend_from_slice(&(value.len() as u64).to_le_bytes());
            out.extend_from_slice(value.as_bytes());
        } else {
            out.push(b'=');
            out.extend_from_slice(value.as_bytes());
        }
        out.push(b'\n');
    }
    out
}

/// Sends records to journald and stderr. Delivery failures never stop the service:
/// stderr still carries the line.
#[derive(Debug)]
pub struct Logger {
    socket: PathBuf,
    stderr_is_journal: bool,
}

impl Logger {
    /// A logger sending to journald's native socket at `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Logger {
            socket: socket.into(),
            stderr_is_journal: stderr_is_journal(),
        }
    }

    /// The socket records are sent to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Logs one line at `priority`.
    pub fn log(&self, priority: Priority, message: &str) {
        let delivered = self.send(&encode_record(priority, message, &[]));
        if !(delivered && self.stderr_is_journal) {
            let _ = writeln!(std::io::stderr(), "{IDENTIFIER}: {message}");
        }
    }

    /// Logs a step at info priority.
    pub fn info(&self, message: &str) {
        self.log(Priority::Info, message);
    }

    /// Logs at warning priority.
    pub fn warn(&self, message: &str) {
        self.log(Priority::Warning, message);
    }

    /// Logs at error priority.
    pub fn error(&self, message: &str) {
        self.log(Priority::Error, message);
    }

    /// The integrity-event line at emergency priority: to the journal (which broadcasts
    /// it to all consoles) and, always, to stderr.
    pub fn integrity_event(&self) {
        self.send(&encode_record(
            Priority::Emergency,
            INTEGRITY_EVENT_MESSAGE,
            &[],
        ));
        let _ = writeln!(std::io::stderr(), "{INTEGRITY_EVENT_MESSAGE}");
    }

    /// Sends one datagram; a journal that does not drain its queue for a second
    /// costs that line (stderr still has it), never a hung boot.
    fn send(&self, record: &[u8]) -> bool {
        UnixDatagram::unbound()
            .and_then(|s| {
                s.set_write_timeout(Some(SEND_TIMEOUT))?;
                s.send_to(record, &self.socket)
            })
            .is_ok_and(|n| n == record.len())
    }
}

/// True when fd 2 is the stream systemd named in `JOURNAL_STREAM=dev:inode`.
fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    std::fs::metadata("/proc/self/fd/2").is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_plain_fields() {
        let r = encode_record(Priority::Emergency, INTEGRITY_EVENT_MESSAGE, &[]);
        assert_eq!(
            r,
            b"PRIORITY=0\nSYSLOG_IDENTIFIER=integrity-handler\nMESSAGE=integrity-handler: Integrity event detected. A clean installation is required.\n"
        );
    }

    #[test]
    fn encodes_multiline_values_in_binary_form() {
        let r = encode_record(Priority::Info, "a\nb", &[("CODE_LINE", "7")]);
        let mut want = b"PRIORITY=6\nSYSLOG_IDENTIFIER=integrity-handler\nMESSAGE\n".to_vec();
        want.extend_from_slice(&3u64.to_le_bytes());
        want.extend_from_slice(b"a\nb\nCODE_LINE=7\n");
        assert_eq!(r, want);
    }

    #[test]
    fn delivers_to_a_bound_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let logger = Logger::new(&path);
        logger.info("FEK retrieved");
        let mut buf = [0u8; 512];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(
            &buf[..n],
            &encode_record(Priority::Info, "FEK retrieved", &[])[..]
        );
        // A missing socket is not an error: stderr carries the line.
        Logger::new(dir.path().join("absent")).info("still fine");
    }
}
