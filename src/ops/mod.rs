//! Running keyproxy: reloads and the file watches that trigger them, the admin endpoints, the
//! report of profiles and keys they and `check` render, the health probe, and OpenClaw's setup.
//! Reads the request path's state; the request path knows nothing of it.

pub mod admin;
pub mod check;
pub mod instance;
pub mod keys_edit;
mod keys_toml;
mod keys_write;
mod live;
mod me;
pub mod openclaw;
mod openclaw_stores;
pub mod probe;
pub mod reload;
mod report;
mod rights;
pub mod service;
mod watch;
