//! Numbers from the upstream are checked before they count: a cost or token count that is
//! negative, not finite or beyond one answer's ceiling is ignored with a warning naming the
//! route and the answer charged its reservation; the ledger keeps its column types and takes
//! every later write, and a restart after SIGKILL still seeds the budget.

mod support;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;

const TOKEN: &str = "kp-agent-0123456789abcdef01234";

/// Answered in turn: five no answer can have, then good ones at $0.50.
const ANSWERS: [&str; 6] = [
    r#"{"model":"m","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"cost":1e308}}"#,
    r#"{"model":"m","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"cost":-1e308}}"#,
    r#"{"model":"m","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"cost":1e300}}"#,
    r#"{"model":"m","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"cost":-5.0}}"#,
    r#"{"model":"m","choices":[],"usage":{"prompt_tokens":9223372036854775807,"completion_tokens":1,"cost":0.01}}"#,
    r#"{"model":"m","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":20,"cost":0.5}}"#,
];

async fn chat(url: &str) -> Reply {
    chat_as(url, TOKEN, "m").await
}

async fn usage(url: &str) -> serde_json::Value {
    get_json_as(url, "/_keyproxy/usage", TOKEN).await
}

fn on_disk(db: &std::path::Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap_or(0)
}

#[tokio::test]
async fn bad_numbers_count_as_the_reservation_and_poison_nothing_across_a_sigkill() {
    bounded(async {
        let next = Arc::new(AtomicUsize::new(0));
        let up = Mock::start(Arc::new(move |_| {
            let n = next.fetch_add(1, Ordering::SeqCst).min(ANSWERS.len() - 1);
            reply(200, ANSWERS[n])
        }))
        .await;
        let bin = Bin::new();
        let dir = bin.config_dir();
        std::fs::write(
            dir.join("keyproxy.toml"),
            format!(
                "state_dir = \"state\"\nkeys_files = [\"keys.toml\"]\n[[routes]]\nprefix = \"/\"\nupstream = \"{}\"\nprofile = \"openrouter:default\"\n[[clients]]\nname = \"agent\"\ntoken = \"{TOKEN}\"\nprofiles = [\"openrouter:default\"]\nbudget_usd = 1.0\nbudget_period = \"day\"\n",
                up.url
            ),
        )
        .unwrap();
        write_private(&dir.join("keys.toml"), &keys_toml("openrouter:default", KEY_A));
        let db = dir.join("state/usage.sqlite3");

        let mut served = Served::start(bin.command()).await;
        for _ in 0..ANSWERS.len() {
            assert_eq!(chat(&served.url).await.status, 200);
        }
        let warning = served.wait_for_log("no answer can have").await;
        assert!(warning.contains("\"route\":\"/\""), "{warning}");
        // Five answers at the $0.05 reserved by default, one at $0.50, all on disk; then SIGKILL.
        while on_disk(&db, "SELECT COALESCE(SUM(requests), 0) FROM usage") < 6 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            on_disk(&db, "SELECT COUNT(*) FROM usage WHERE typeof(prompt_tokens) != 'integer'"),
            0
        );
        served.signal("KILL");

        let served = Served::start(bin.command()).await;
        let v = usage(&served.url).await;
        let total = &v["today"]["total"];
        assert!(v["database"]["error"].is_null(), "{v}");
        assert_eq!(total["requests"], 6, "{v}");
        assert_eq!(total["estimated"], 5, "{v}");
        assert_eq!(total["prompt_tokens"], 10, "{v}");
        assert!((total["cost_usd"].as_f64().unwrap() - 0.75).abs() < 1e-9, "{v}");
        // $0.75 of $1.00 read back: one more answer ($1.25), then the budget is used.
        assert_eq!(chat(&served.url).await.status, 200);
        let refused = chat(&served.url).await;
        assert_eq!(refused.status, 429, "{}", refused.text());
        assert_eq!(up.count(), 7);
        // And the ledger still takes writes.
        while on_disk(&db, "SELECT COALESCE(SUM(requests), 0) FROM usage") < 7 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        served.stop().await;
    })
    .await;
}
