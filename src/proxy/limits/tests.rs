use super::*;
use crate::config::clients::{Limits as ClientLimits, Period};

fn client(limits: ClientLimits) -> Client {
    Client {
        name: "agent".into(),
        profiles: vec!["p".into()],
        models: Vec::new(),
        limits,
        admin: false,
    }
}

fn budget(usd: f64, reserve: f64) -> ClientLimits {
    ClientLimits {
        budget: Some((usd, Period::Day)),
        reserve_usd: reserve,
        ..ClientLimits::default()
    }
}

const POST: Estimate = Estimate {
    billable: true,
    tokens: None,
};

#[test]
fn twenty_at_once_on_a_dollar_with_ninety_cents_reserved_admit_two() {
    let c = client(budget(1.0, 0.9));
    let used = Arc::new(Used::default());
    let held: Vec<_> = (0..20)
        .filter_map(|_| admit(&c, &used, POST).ok())
        .collect();
    assert_eq!(held.len(), 2);
    assert_eq!(used.now(&c.limits).reserved_micros, 1_800_000);
    for r in held {
        r.settle(Charge {
            micros: 900_000,
            tokens: 0,
        });
    }
    let now = used.now(&c.limits);
    assert_eq!((now.spend_micros, now.reserved_micros), (1_800_000, 0));
    assert!(admit(&c, &used, POST).is_err());
}

#[test]
fn a_reservation_dropped_unsettled_is_given_back_and_settles_once() {
    let c = client(ClientLimits {
        tokens_per_day: Some(10_000),
        reserve_tokens: 4_000,
        max_in_flight: Some(1),
        ..budget(1.0, 0.25)
    });
    let used = Arc::new(Used::default());
    let r = admit(&c, &used, POST).unwrap();
    assert!(admit(&c, &used, POST).is_err(), "one at a time");
    drop(r);
    let now = used.now(&c.limits);
    assert_eq!(
        (
            now.reserved_micros,
            now.reserved_tokens,
            now.in_flight,
            now.spend_micros
        ),
        (0, 0, 0, 0)
    );
    let r = admit(
        &c,
        &used,
        Estimate {
            tokens: Some(100),
            ..POST
        },
    )
    .unwrap();
    assert_eq!(
        r.estimate(),
        Charge {
            micros: 250_000,
            tokens: 100
        }
    );
    r.settle(Charge {
        micros: 10,
        tokens: 7,
    });
    let now = used.now(&c.limits);
    assert_eq!(
        (now.spend_micros, now.tokens_today, now.in_flight),
        (10, 7, 0)
    );
}

#[test]
fn a_refusal_after_a_reservation_gives_it_back() {
    let c = client(ClientLimits {
        requests_per_minute: Some(1),
        ..budget(1.0, 0.5)
    });
    let used = Arc::new(Used::default());
    let first = admit(&c, &used, POST).unwrap();
    let err = admit(&c, &used, POST).unwrap_err();
    assert_eq!(err.reason(), "rate-limited");
    assert_eq!(
        used.now(&c.limits).reserved_micros,
        500_000,
        "only the first's"
    );
    drop(first);
}

#[test]
fn reads_reserve_nothing() {
    let c = client(budget(1.0, 0.9));
    let used = Arc::new(Used::default());
    let reads: Vec<_> = (0..5)
        .map(|_| admit(&c, &used, Estimate::of_method(&http::Method::GET)).unwrap())
        .collect();
    assert_eq!(used.now(&c.limits).reserved_micros, 0);
    drop(reads);
}

fn clients(toml: &str) -> Clients {
    crate::config::parse(
        &format!("[[routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:9\"\nprofile = \"p:d\"\n{toml}"),
        std::path::Path::new("keyproxy.toml"),
    )
    .unwrap()
    .clients
    .clone()
}

#[test]
fn a_reload_keeps_counters_by_token_and_seeds_a_client_new_to_limits() {
    let token = "token = \"kp-0123456789abcdef0123\"\nprofiles = [\"p:d\"]\n";
    let before = clients(&format!(
        "[[clients]]\nname = \"a\"\n{token}budget_usd = 5.0\n"
    ));
    let old = Limits::build(&before, None, || None);
    old.of("a").unwrap().spend[slot(Period::Month)]
        .add(period_index(Period::Month, SystemTime::now()), 3);
    let renamed = clients(&format!(
        "[[clients]]\nname = \"b\"\n{token}budget_usd = 5.0\n"
    ));
    let mut asked = false;
    let new = Limits::build(&renamed, Some(&old), || {
        asked = true;
        None
    });
    assert!(
        !asked,
        "a renamed client keeps its counters; the ledger is not read"
    );
    let limits = renamed.iter().next().unwrap().limits;
    assert_eq!(new.of("b").unwrap().now(&limits).spend_micros, 3);

    let today = crate::usage::day(SystemTime::now());
    let rows = BTreeMap::from([(
        (today, "c".to_owned(), "p:d".to_owned(), "m".to_owned()),
        Counts {
            requests: 1,
            cost_usd: 0.75,
            prompt_tokens: 5,
            estimated_tokens: 6,
            ..Counts::default()
        },
    )]);
    let gained = clients("[[clients]]\nname = \"c\"\ntoken = \"kp-another-token-0123456789\"\nprofiles = [\"p:d\"]\nbudget_usd = 1.0\nbudget_period = \"week\"\ntokens_per_day = 100\n");
    let new = Limits::build(&gained, Some(&old), || Some(rows));
    let limits = gained.iter().next().unwrap().limits;
    let now = new.of("c").unwrap().now(&limits);
    assert_eq!((now.spend_micros, now.tokens_today), (750_000, 11));
}
