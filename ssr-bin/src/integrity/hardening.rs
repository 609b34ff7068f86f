//! Keeping the FEK out of core dumps and swap: the process makes itself non-dumpable
//! and locks all of its memory before it touches a key.
//!
//! The FEK passes through several buffers this crate does not own (ssr-tpm's `Fek`,
//! ssr-fscrypt's `MasterKey`, tss-esapi's response buffers, libtss2's own memory).
//! Each zeroizes on drop, but none can be locked from here one by one; `mlockall`
//! locks them all, present and future, and `PR_SET_DUMPABLE` 0 keeps them out of a
//! core file (and `/proc/<pid>/mem` away from unprivileged readers).

/// What [`harden_process`] could not do (each is logged as a warning; the service
/// goes on: refusing to unlock would brick the system over a missing limit).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Hardening {
    /// `prctl(PR_SET_DUMPABLE, 0)` failed: the OS error.
    pub dumpable_error: Option<String>,
    /// `mlockall(MCL_CURRENT | MCL_FUTURE)` failed (e.g. RLIMIT_MEMLOCK without
    /// CAP_IPC_LOCK): the OS error.
    pub mlock_error: Option<String>,
}

/// Makes the process non-dumpable and locks its memory (current and future pages).
/// Call first thing in `main`, before any key exists.
#[allow(unsafe_code)]
pub fn harden_process() -> Hardening {
    let mut out = Hardening::default();
    // SAFETY: prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) takes only integer arguments, reads
    // and writes no memory of ours, and only changes this process's dumpable flag.
    // libc has no safe wrapper; the variadic call gets exactly the five `c_ulong`
    // arguments the kernel reads for this option.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_DUMPABLE,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if rc != 0 {
        out.dumpable_error = Some(std::io::Error::last_os_error().to_string());
    }
    // Without CAP_IPC_LOCK, MCL_FUTURE would count every later allocation against
    // RLIMIT_MEMLOCK and make one fail (an abort) once the limit is reached: lock only
    // with the capability (root has it; the unit keeps it).
    if !has_cap_ipc_lock() {
        out.mlock_error = Some("CAP_IPC_LOCK is not in the effective set".into());
        return out;
    }
    // SAFETY: mlockall takes a flag word and touches no memory of ours; it only pins
    // this process's pages (or fails with an errno).
    let rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
    if rc != 0 {
        out.mlock_error = Some(std::io::Error::last_os_error().to_string());
    }
    out
}

/// CAP_IPC_LOCK (bit 14) in `CapEff:` of /proc/self/status.
fn has_cap_ipc_lock() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}
