//! The usage ledger: what each answer used, added up per day, client, profile and model on a
//! thread of its own, so the request path only sends one message when an answer ends. Counts
//! reach SQLite at most a second after they happen, and on shutdown.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use super::store::Store;
use crate::metrics::Metrics;

/// At most this long between an answer and its count on disk (plus one tick).
const FLUSH_EVERY: Duration = Duration::from_millis(900);
/// How often the ledger takes in what answers used.
const TICK: Duration = Duration::from_millis(50);

/// One row of the ledger: a UTC day, a client ("" without clients), a profile and a model.
pub type Row = (String, String, String, String);

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Counts {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Includes what answers counted by estimate were charged.
    pub cost_usd: f64,
    /// Answers whose usage was not seen or not believed, charged their reservation.
    pub estimated: u64,
    /// The tokens those answers were charged.
    pub estimated_tokens: u64,
}

impl Counts {
    /// Adds `other`, saturating: a count that cannot grow stays at its ceiling rather than
    /// wrapping, and a cost stays a finite number.
    pub fn add(&mut self, other: &Counts) {
        self.requests = self.requests.saturating_add(other.requests);
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.completion_tokens = self
            .completion_tokens
            .saturating_add(other.completion_tokens);
        self.estimated = self.estimated.saturating_add(other.estimated);
        self.estimated_tokens = self.estimated_tokens.saturating_add(other.estimated_tokens);
        let cost = self.cost_usd + other.cost_usd;
        if cost.is_finite() {
            self.cost_usd = cost;
        }
    }
}

/// How one answer is counted: what it reported, or, for an answer whose usage was not seen or
/// not believed, what it was charged instead.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answer {
    pub model: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
    /// Charged its reservation: `estimated_tokens` tokens and `cost_usd` dollars.
    pub estimated: bool,
    pub estimated_tokens: u64,
}

enum Message {
    Used {
        client: Arc<str>,
        profile: Arc<str>,
        answer: Answer,
        at: SystemTime,
    },
    /// Write what is pending (opening the database first if need be), then answer.
    Flush(mpsc::Sender<()>),
}

/// The `[shared]` task that adds a tick's rows to the group's totals.
pub type SharedOutlet = tokio::sync::mpsc::UnboundedSender<Vec<(Row, Counts)>>;

/// Where counts are kept: not yet opened, open, or why they are kept in memory only.
#[derive(Debug, Clone)]
pub enum Persistence {
    NotYetOpened(PathBuf),
    Open(PathBuf),
    MemoryOnly(String),
}

/// A handle to the ledger; cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    tx: mpsc::Sender<Message>,
    /// With `[shared]`: where each tick's rows also go, to be added to the group's totals.
    shared: Arc<std::sync::OnceLock<SharedOutlet>>,
    book: Arc<Mutex<BTreeMap<Row, Counts>>>,
    persistence: Arc<Mutex<Persistence>>,
}

impl Ledger {
    /// Starts the ledger's thread for `state_dir/usage.sqlite3`. The database is opened (or
    /// created) when the first count or report needs it, so an idle keyproxy has not paid for
    /// SQLite; one that cannot be opened is a warning, and usage is then kept in memory only.
    pub fn open(state_dir: Option<&Path>, metrics: Arc<Metrics>) -> Self {
        let persistence = match state_dir {
            Some(dir) => Persistence::NotYetOpened(dir.join("usage.sqlite3")),
            None => Persistence::MemoryOnly(
                "no state_dir (nor XDG_STATE_HOME or HOME) says where to keep usage; it is counted in memory only".into(),
            ),
        };
        let book = Arc::new(Mutex::new(BTreeMap::new()));
        let persistence = Arc::new(Mutex::new(persistence));
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(std::sync::OnceLock::new());
        let outlet = shared.clone();
        let ledger = Self {
            tx,
            shared,
            book: book.clone(),
            persistence: persistence.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name("keyproxy-usage".into())
            .spawn(move || keep(&rx, &book, &persistence, &metrics, &outlet));
        if let Err(e) = spawned {
            tracing::warn!("cannot start the usage thread ({e}); usage is not counted");
        }
        ledger
    }

    /// Also sends each tick's rows to `outlet` (`[shared]`); set once, at start.
    pub fn share_with(&self, outlet: SharedOutlet) {
        let _ = self.shared.set(outlet);
    }

    /// Counts what one answer used; called once when it ends.
    pub fn record(&self, client: Arc<str>, profile: Arc<str>, answer: Answer) {
        let _ = self.tx.send(Message::Used {
            client,
            profile,
            answer,
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

    /// Every row so far, the database's included.
    pub fn rows(&self) -> BTreeMap<Row, Counts> {
        if matches!(self.persistence(), Persistence::NotYetOpened(_)) {
            self.flush();
        }
        self.book
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn persistence(&self) -> Persistence {
        self.persistence
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

/// Opens the database on first need and adds its rows to the book.
fn ensure_open(
    store: &mut Option<Store>,
    persistence: &Mutex<Persistence>,
    book: &Mutex<BTreeMap<Row, Counts>>,
) {
    let mut p = persistence.lock().unwrap_or_else(PoisonError::into_inner);
    let Persistence::NotYetOpened(path) = &*p else {
        return;
    };
    let path = path.clone();
    *p = match Store::open(&path) {
        Ok((opened, rows)) => {
            let mut book = book.lock().unwrap_or_else(PoisonError::into_inner);
            for (row, counts) in rows {
                book.entry(row).or_default().add(&counts);
            }
            *store = Some(opened);
            Persistence::Open(path)
        }
        Err(e) => {
            let why = format!("usage database {}: {e}; usage is counted in memory only until keyproxy is restarted with a database it can open", path.display());
            tracing::warn!("{why}");
            Persistence::MemoryOnly(why)
        }
    };
}

/// What one tick took in, added up per (day number, client, profile, model).
type Tick = HashMap<(u64, Arc<str>, Arc<str>, String), Counts, foldhash::fast::RandomState>;

fn keep(
    rx: &mpsc::Receiver<Message>,
    book: &Mutex<BTreeMap<Row, Counts>>,
    persistence: &Mutex<Persistence>,
    metrics: &Metrics,
    shared: &std::sync::OnceLock<SharedOutlet>,
) {
    let mut store = None;
    let mut pending: BTreeMap<Row, Counts> = BTreeMap::new();
    let mut due: Option<Instant> = None;
    loop {
        // Woken by the clock, not by each answer: a wake-up per answer cost a context switch
        // per request, a fifth of the SSE throughput on two cores.
        std::thread::sleep(TICK);
        let (mut flushes, mut gone, mut tick) = (Vec::new(), false, Tick::default());
        loop {
            match rx.try_recv() {
                Ok(Message::Used {
                    client,
                    profile,
                    answer,
                    at,
                }) => {
                    let day = at
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs() / 86_400);
                    tick.entry((day, client, profile, answer.model))
                        .or_default()
                        .add(&Counts {
                            requests: 1,
                            prompt_tokens: answer.prompt_tokens,
                            completion_tokens: answer.completion_tokens,
                            cost_usd: answer.cost_usd,
                            estimated: u64::from(answer.estimated),
                            estimated_tokens: answer.estimated_tokens,
                        });
                }
                Ok(Message::Flush(done)) => flushes.push(done),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    gone = true;
                    break;
                }
            }
        }
        if !tick.is_empty() || !flushes.is_empty() {
            ensure_open(&mut store, persistence, book);
        }
        if !tick.is_empty() {
            let mut book = book.lock().unwrap_or_else(PoisonError::into_inner);
            let mut batch = shared.get().map(|_| Vec::with_capacity(tick.len()));
            for ((day_number, client, profile, model), counts) in tick {
                metrics.used(
                    &client,
                    &profile,
                    counts.prompt_tokens,
                    counts.completion_tokens,
                    counts.cost_usd,
                );
                let at = SystemTime::UNIX_EPOCH + Duration::from_secs(day_number * 86_400);
                let row = (day(at), client.to_string(), profile.to_string(), model);
                book.entry(row.clone()).or_default().add(&counts);
                if let Some(batch) = batch.as_mut() {
                    batch.push((row.clone(), counts));
                }
                pending.entry(row).or_default().add(&counts);
            }
            if let (Some(outlet), Some(batch)) = (shared.get(), batch) {
                let _ = outlet.send(batch);
            }
            due.get_or_insert_with(|| Instant::now() + FLUSH_EVERY);
        }
        if gone || !flushes.is_empty() || due.is_some_and(|at| Instant::now() >= at) {
            write(&mut store, &mut pending);
            due = None;
        }
        for done in flushes {
            let _ = done.send(());
        }
        if gone {
            return;
        }
    }
}

/// Adds `pending` to the database in one transaction; on failure, row by row, so a row the
/// database refuses is dropped and never holds back the rest, while rows that failed for the
/// disk's sake (full) stay pending for the next try. Nothing already written is touched.
fn write(store: &mut Option<Store>, pending: &mut BTreeMap<Row, Counts>) {
    let Some(s) = store.as_mut() else {
        pending.clear();
        return;
    };
    if pending.is_empty() {
        return;
    }
    if let Err(e) = s.add(pending) {
        s.add_each(pending);
        if !pending.is_empty() {
            tracing::warn!("cannot write usage to its database ({e}); keeping it to try again");
        }
    } else {
        pending.clear();
    }
}
