//! The config file's validation, error positions and presets.

use super::*;

fn parse_str(text: &str) -> Result<Config, ConfigError> {
    parse(text, Path::new("conf/keyproxy.toml"))
}

#[test]
fn unknown_field_names_the_field_and_line() {
    let err =
        parse_str("listen = \"127.0.0.1:1\"\n\n[[routes]]\nprefix = \"/\"\nupstrem = \"x\"\n")
            .unwrap_err()
            .to_string();
    assert!(err.starts_with("conf/keyproxy.toml:5:"), "{err}");
    assert!(err.contains("unknown field `upstrem`"), "{err}");
}

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    let c = parse_str(
        "keys_files = [\"keys.toml\"]\n[[routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:9/v1/\"\nprofile = \"p\"\nca_file = \"ca.pem\"\n",
    )
    .unwrap();
    assert_eq!(c.keys_files, vec![PathBuf::from("conf/keys.toml")]);
    assert_eq!(c.routes[0].ca_file, Some(PathBuf::from("conf/ca.pem")));
    assert_eq!(c.routes[0].upstream.base_path, "/v1");
    assert_eq!(c.routes[0].header, http::header::AUTHORIZATION);
    assert_eq!(c.routes[0].format.render("k"), "Bearer k");
}

#[test]
fn bad_values_name_the_line() {
    let err = parse_str("[[routes]]\nprefix = \"/\"\nupstream = \"ftp://x\"\nprofile = \"p\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("conf/keyproxy.toml:3:"), "{err}");
    assert!(err.contains("http:// or https://"), "{err}");
    let err = parse_str("connect_timeout = \"soon\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains(":1:"), "{err}");
    let err = parse_str("[[routes]]\nprefix = \"/\"\nupstream = \"http://a\"\nprofile = \"p\"\nformat = \"Bearer\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("{key}"), "{err}");
}

#[test]
fn a_config_without_routes_keeps_the_embedded_route() {
    let c = parse_str("openclaw_state_dirs = [\"~/.openclaw\"]\n").unwrap();
    assert_eq!(c.routes, Config::embedded().routes);
    assert_eq!(c.routes[0].profile, DEFAULT_PROFILE);
}

#[test]
fn durations_are_positive_and_bounded_so_nothing_can_overflow() {
    for bad in [
        "poll_interval = \"0s\"",
        "idle_timeout = \"0ms\"",
        "header_read_timeout = \"500000000000y\"",
        "idle_timeout = \"31days\"",
    ] {
        let err = parse_str(&format!("{bad}\n")).unwrap_err().to_string();
        assert!(err.starts_with("conf/keyproxy.toml:1:"), "{bad}: {err}");
    }
    assert_eq!(
        parse_str("shutdown_grace = \"0s\"\n")
            .unwrap()
            .shutdown_grace,
        Duration::ZERO
    );
    let c = parse_str("idle_timeout = \"2s\"\n").unwrap();
    assert_eq!(
        c.response_timeout,
        Duration::from_secs(2),
        "defaults to idle_timeout"
    );
    let c = parse_str("idle_timeout = \"2s\"\nresponse_timeout = \"9s\"\n").unwrap();
    assert_eq!(c.response_timeout, Duration::from_secs(9));
}

#[test]
fn workers_default_to_one_per_cpu_and_must_be_positive() {
    let route = "[[routes]]\nprefix = \"/\"\nupstream = \"http://a\"\nprofile = \"p\"\n";
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(parse_str(route).unwrap().workers, cpus);
    assert_eq!(
        parse_str(&format!("workers = 3\n{route}")).unwrap().workers,
        3
    );
    let err = parse_str(&format!("\nworkers = 0\n{route}"))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("conf/keyproxy.toml:2:"), "{err}");
    assert!(err.contains("workers = 0: must be 1 to 256"), "{err}");
}

#[test]
fn format_renders_around_the_placeholder() {
    let f = KeyFormat::parse("Token {key}; v=1").unwrap();
    assert_eq!(f.render("abc"), "Token abc; v=1");
    assert!(KeyFormat::parse("{key}{key}").is_err());
}

#[test]
fn paths_expand_variables_as_a_shell_would() {
    let home = std::env::var("HOME").unwrap();
    let config_home = std::env::var("XDG_CONFIG_HOME").unwrap_or(format!("{home}/.config"));
    assert_eq!(
        expand_vars("$XDG_CONFIG_HOME/keyproxy/keys.toml"),
        format!("{config_home}/keyproxy/keys.toml")
    );
    assert_eq!(expand_vars("${HOME}/k.toml"), format!("{home}/k.toml"));
    assert_eq!(
        expand_vars("/a/$KEYPROXY_SURELY_UNSET_VAR/b"),
        "/a/$KEYPROXY_SURELY_UNSET_VAR/b"
    );
    assert_eq!(expand_vars("/a/${unclosed"), "/a/${unclosed");
    assert_eq!(expand_vars("cost$"), "cost$");
    assert_eq!(
        resolve(Path::new("/etc"), "${HOME}/k.toml"),
        PathBuf::from(format!("{home}/k.toml"))
    );
}
