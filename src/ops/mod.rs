//! The running proxy's machinery beside the request path: reloads and the file watches that
//! trigger them, the admin endpoints and who may ask them, the report of profiles and keys
//! they (and `check`) render, and the page at `/_keyproxy/` that shows it. Reads the request
//! path's state; the request path knows nothing of it. What a command does on its own, without
//! a running proxy, is in `tasks`.

pub mod admin;
mod me;
pub mod page;
pub mod reload;
pub(crate) mod report;
mod rights;
mod watch;
