//! What the process runs on: the worker runtimes, the scheduling trick that gathers a burst of
//! upstream chunks into one write, and the per-thread log buffer. Knows nothing of keys, routes
//! or requests.

pub mod burst;
pub mod clock;
pub mod log_buffer;
pub mod log_line;
pub mod workers;

pub use workers::{current_worker, on_worker};
