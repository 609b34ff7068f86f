//! HTTPS adapter.
