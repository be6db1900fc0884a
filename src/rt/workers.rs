//! Workers, each a tokio runtime with one worker thread, serving the connections handed to them in
//! turn. A client connection, the upstream connection its requests use (each worker has its own
//! pool) and the body between them are then driven by one thread: handing a chunk from one task
//! to the other is a push on that thread's run queue instead of a wake-up across threads, which
//! [`Bursts`](super::burst::Bursts) relies on to gather a burst in one run of the queue.
//!
//! A current_thread runtime on the worker's own thread: the thread takes the connections handed
//! to it and runs them, with no thread in between and none of the multi-thread scheduler's work
//! (its clock readings around every run, its shared queue and wake-ups). The multi-thread
//! scheduler's LIFO slot once mattered, when hyper-util's pool gave a connection back from a
//! task spawned for it; keyproxy's own pool (`proxy::h1`) takes it back when the answer's body
//! ends, on this thread.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;

use tokio::sync::mpsc;

use super::burst::Counted;
use super::log_buffer;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
    static ON_WORKER: Cell<bool> = const { Cell::new(false) };
}

/// The index of the worker whose thread this is; 0 on any other thread. Whoever keeps one
/// resource per worker (an upstream connection pool) picks it with this, so the choice of
/// thread never travels through the domain's types.
pub fn current_worker() -> usize {
    WORKER.with(Cell::get)
}

/// Whether this is a worker's thread: the one thread its runtime runs tasks on, so a task
/// spawned here sees this thread's thread-locals.
pub fn on_worker() -> bool {
    ON_WORKER.with(Cell::get)
}

/// A connection to serve: the future that serves it, made on the runtime of the worker that
/// takes it.
pub type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

pub struct Workers {
    queues: Vec<mpsc::UnboundedSender<Job>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    next: usize,
}

impl Workers {
    /// Starts `count` workers. They stop, dropping whatever they still run, when `Workers` is
    /// dropped, which returns once their log lines are written: the caller drains connections
    /// first.
    pub fn start(count: usize) -> std::io::Result<Self> {
        let mut queues = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for index in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
            let thread = std::thread::Builder::new()
                .name(format!("keyproxy-worker-{index}"))
                .spawn(move || {
                    WORKER.with(|w| w.set(index));
                    ON_WORKER.with(|w| w.set(true));
                    log_buffer::collect_on_this_thread();
                    // Runs the connections until the queue closes; then what is left is dropped
                    // with the runtime, and the last lines are written.
                    runtime.block_on(async move {
                        while let Some(job) = rx.recv().await {
                            tokio::spawn(Counted::new(job()));
                        }
                    });
                    drop(runtime);
                    log_buffer::flush();
                })?;
            queues.push(tx);
            threads.push(thread);
        }
        Ok(Self {
            queues,
            threads,
            next: 0,
        })
    }

    /// Hands `job` to the next worker in turn.
    pub fn run(&mut self, job: Job) {
        let index = self.next;
        self.next = (index + 1) % self.queues.len();
        if self.queues[index].send(job).is_err() {
            // Only when the worker's thread has died, which a panic in a task does not cause.
            tracing::error!(worker = index, "worker thread is gone; connection dropped");
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.queues.clear();
        for thread in self.threads.drain(..) {
            // Quick: the runtimes stop at once, cancelling what is left.
            let _ = thread.join();
        }
    }
}
