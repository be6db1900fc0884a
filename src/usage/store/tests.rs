use super::*;

fn row(day: &str) -> Row {
    (day.into(), "c".into(), "p".into(), "m".into())
}

#[test]
fn sums_that_overflow_stay_integers_and_the_file_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.sqlite3");
    let (mut store, _) = Store::open(&path).unwrap();
    let huge = Counts {
        requests: 1,
        prompt_tokens: u64::MAX,
        completion_tokens: i64::MAX as u64,
        cost_usd: f64::INFINITY,
        ..Counts::default()
    };
    let mut pending = BTreeMap::from([(row("2026-12-06"), huge)]);
    store.add(&pending).unwrap();
    store.add(&pending).unwrap();
    let kind: String = store
        .conn
        .query_row("SELECT typeof(prompt_tokens) FROM usage", [], |r| r.get(0))
        .unwrap();
    assert_eq!(kind, "integer");
    pending.insert(
        row("2026-12-07"),
        Counts {
            requests: 1,
            cost_usd: 0.5,
            ..Counts::default()
        },
    );
    store.add(&pending).unwrap();
    drop(store);
    let (_, rows) = Store::open(&path).unwrap();
    let c = rows[&row("2026-12-06")];
    assert_eq!((c.requests, c.prompt_tokens), (3, i64::MAX as u64));
    assert_eq!(c.cost_usd, 0.0, "an infinite cost is not written");
    assert_eq!(rows[&row("2026-12-07")].cost_usd, 0.5);
}

#[test]
fn a_file_an_older_keyproxy_poisoned_is_repaired_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.sqlite3");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE usage (
            day TEXT NOT NULL, client TEXT NOT NULL, profile TEXT NOT NULL, model TEXT NOT NULL,
            requests INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL, cost_usd REAL NOT NULL,
            PRIMARY KEY (day, client, profile, model));
         INSERT INTO usage VALUES ('2026-12-06', 'c', 'p', 'm', 2, 1.8446744073709552e19, -5, 9e999);
         INSERT INTO usage VALUES ('2026-12-05', 'c', 'p', 'm', 1, 10, 20, -3.0);",
    )
    .unwrap();
    drop(conn);
    let (mut store, rows) = Store::open(&path).unwrap();
    let c = rows[&row("2026-12-06")];
    assert_eq!(c.prompt_tokens, i64::MAX as u64);
    assert_eq!(c.completion_tokens, 0);
    assert_eq!(c.cost_usd, MAX_COST, "an infinite cost saturates");
    assert_eq!(rows[&row("2026-12-05")].cost_usd, 0.0);
    // And it takes writes again, into the added columns too.
    let one = Counts {
        requests: 1,
        estimated: 1,
        estimated_tokens: 7,
        ..Counts::default()
    };
    store
        .add(&BTreeMap::from([(row("2026-12-06"), one)]))
        .unwrap();
    drop(store);
    let (_, rows) = Store::open(&path).unwrap();
    let c = rows[&row("2026-12-06")];
    assert_eq!((c.requests, c.estimated, c.estimated_tokens), (3, 1, 7));
}
