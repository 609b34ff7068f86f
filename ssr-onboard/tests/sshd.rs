//! sshd test (below).
