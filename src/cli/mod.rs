//! The binary's commands, one file per command group; `args.rs` is the command line they share
//! (clap). They call the library by its public names only.

pub mod args;
pub mod check;
pub mod docs;
pub mod health;
pub mod keys;
pub mod openclaw;
pub mod running;
pub mod serve;
pub mod service;
