//! keyproxy: a local reverse proxy that holds LLM provider API keys so that agents do not.
//!
//! The binary is a thin shell over this library; tests and benches use it directly.

pub mod access_log;
pub mod activity;
pub mod admin;
pub mod body;
pub mod burst;
pub mod check;
pub mod cli;
pub mod clients;
pub mod config;
pub mod error;
mod forward;
mod headers;
pub mod keys;
pub mod log_buffer;
pub mod metrics;
pub mod openclaw_setup;
pub mod probe;
pub mod providers;
pub mod proxy;
pub mod refusal;
pub mod routes;
pub mod server;
pub mod state;
pub mod text;
pub mod upstream;
pub mod workers;

pub use config::{Config, Origin};
pub use server::{start, Running};
