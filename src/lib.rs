//! keyproxy: a local reverse proxy that holds LLM provider API keys so that agents do not.
//!
//! The binary is a thin shell over this library; tests and benches use it directly. The folders
//! are the domain and depend one way (see ARCHITECTURE.md): `config` <- `keys` <- `proxy` <-
//! `ops` <- `server` and `tasks`, with `usage` beside `config`, and `text`, `metrics` and `rt` as
//! leaves anything may use.

pub mod config;
pub mod keys;
mod metrics;
pub mod ops;
pub mod proxy;
mod rt;
pub mod server;
pub mod tasks;
mod text;
pub mod usage;

pub use config::{Config, Origin};
pub use rt::log_buffer::Stderr as LogWriter;
pub use rt::log_line::{write_directly as write_log_lines_directly, TextLine};
pub use server::{start, Running};
