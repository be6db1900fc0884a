//! The usage ledger: what each answer used, added up per day, client, profile and model on a
//! thread of its own, so the request path only sends one message when an answer ends. Counts
//! reach SQLite at most a second after they happen, and on shutdown.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use super::scan::Used;
use super::store::Store;
use crate::metrics::Metrics;

/// At most this long between an answer and its count on disk.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// One row of the ledger: a UTC day, a client ("" without clients), a profile and a model.
pub type Row = (String, String, String, String);

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Counts {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
}

impl Counts {
    pub fn add(&mut self, other: &Counts) {
        self.requests += other.requests;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.cost_usd += other.cost_usd;
    }
}

enum Message {
    Used {
        client: Arc<str>,
        profile: Arc<str>,
        used: Used,
        at: SystemTime,
    },
    Flush(mpsc::Sender<()>),
}

/// A handle to the ledger; cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    tx: mpsc::Sender<Message>,
    book: Arc<Mutex<BTreeMap<Row, Counts>>>,
    /// Where counts are kept, or why they are kept in memory only.
    pub persistence: Arc<Result<PathBuf, String>>,
}

impl Ledger {
    /// Opens (or creates) `state_dir/usage.sqlite3` and starts the ledger's thread. A database
    /// that cannot be opened is a warning: usage is then counted in memory only.
    pub fn open(state_dir: Option<&Path>, metrics: Arc<Metrics>) -> Self {
        let opened = match state_dir.map(|d| d.join("usage.sqlite3")) {
            None => Err("no state_dir (nor XDG_STATE_HOME or HOME) says where to keep usage; it is counted in memory only".to_owned()),
            Some(path) => match Store::open(&path) {
                Ok((store, rows)) => Ok((store, rows, path)),
                Err(e) => Err(format!("usage database {}: {e}; usage is counted in memory only until keyproxy is restarted with a database it can open", path.display())),
            },
        };
        let (store, book, persistence) = match opened {
            Ok((store, rows, path)) => (Some(store), rows, Ok(path)),
            Err(why) => {
                tracing::warn!("{why}");
                (None, BTreeMap::new(), Err(why))
            }
        };
        let book = Arc::new(Mutex::new(book));
        let (tx, rx) = mpsc::channel();
        let ledger = Self {
            tx,
            book: book.clone(),
            persistence: Arc::new(persistence),
        };
        let spawned = std::thread::Builder::new()
            .name("keyproxy-usage".into())
            .spawn(move || keep(&rx, &book, store, &metrics));
        if let Err(e) = spawned {
            tracing::warn!("cannot start the usage thread ({e}); usage is not counted");
        }
        ledger
    }

    /// Counts what one answer used; called once when it ends.
    pub fn record(&self, client: Arc<str>, profile: Arc<str>, used: Used) {
        let _ = self.tx.send(Message::Used {
            client,
            profile,
            used,
            at: SystemTime::now(),
        });
    }

    /// Writes what is pending now and waits (at most 5 s) until it is on disk.
    pub fn flush(&self) {
        let (tx, rx) = mpsc::channel();
        if self.tx.send(Message::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(5));
        }
    }

    /// Every row so far.
    pub fn rows(&self) -> BTreeMap<Row, Counts> {
        self.book
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The UTC day of `t`, as `2026-11-24`.
pub fn day(t: SystemTime) -> String {
    let mut text = humantime::format_rfc3339_seconds(t).to_string();
    text.truncate(10);
    text
}

fn keep(
    rx: &mpsc::Receiver<Message>,
    book: &Mutex<BTreeMap<Row, Counts>>,
    mut store: Option<Store>,
    metrics: &Metrics,
) {
    let mut pending: BTreeMap<Row, Counts> = BTreeMap::new();
    let mut due: Option<Instant> = None;
    loop {
        let message = match due {
            Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match message {
            Ok(Message::Used {
                client,
                profile,
                used,
                at,
            }) => {
                metrics.used(
                    &client,
                    &profile,
                    used.prompt_tokens,
                    used.completion_tokens,
                    used.cost,
                );
                let counts = Counts {
                    requests: 1,
                    prompt_tokens: used.prompt_tokens,
                    completion_tokens: used.completion_tokens,
                    cost_usd: used.cost,
                };
                let row = (day(at), client.to_string(), profile.to_string(), used.model);
                book.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(row.clone())
                    .or_default()
                    .add(&counts);
                pending.entry(row).or_default().add(&counts);
                due.get_or_insert_with(|| Instant::now() + FLUSH_EVERY);
            }
            Ok(Message::Flush(done)) => {
                write(&mut store, &mut pending);
                due = None;
                let _ = done.send(());
            }
            Err(RecvTimeoutError::Timeout) => {
                write(&mut store, &mut pending);
                due = None;
            }
            Err(RecvTimeoutError::Disconnected) => {
                write(&mut store, &mut pending);
                return;
            }
        }
    }
}

/// Adds `pending` to the database in one transaction; on failure (a full disk) they stay
/// pending for the next try, and nothing already written is touched.
fn write(store: &mut Option<Store>, pending: &mut BTreeMap<Row, Counts>) {
    let Some(s) = store.as_mut() else {
        pending.clear();
        return;
    };
    if pending.is_empty() {
        return;
    }
    match s.add(pending) {
        Ok(()) => pending.clear(),
        Err(e) => {
            tracing::warn!("cannot write usage to its database ({e}); keeping it to try again")
        }
    }
}
