//! What the commands do on their own, once, beside the running proxy: `check` and its live
//! checks, the health probe, asking a running keyproxy (`instance`), keys file edits, service
//! files and OpenClaw's setup. Uses `ops` (a reloader to load config and keys as serve would,
//! the report); nothing that serves uses it.

pub mod check;
pub mod instance;
pub mod keys_edit;
mod keys_toml;
mod keys_write;
mod live;
pub mod openclaw;
mod openclaw_stores;
pub mod probe;
pub mod service;
