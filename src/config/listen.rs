//! The listen address, as `--listen`, `KEYPROXY_LISTEN` and the config's `listen` give it: an IP
//! address and port, or a host name and port that resolves (`localhost:8787`).

use std::net::{SocketAddr, ToSocketAddrs as _};

/// `text` as an address to listen on. A host name is resolved once, here; of its addresses the
/// first IPv4 one is taken (`localhost` is then 127.0.0.1, as most agents' URLs assume), else the
/// first. The error is one sentence that says what to write instead, with no quotes (config
/// errors hide quoted text).
pub fn listen_address(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!(
            "listen address {text} has no port; write HOST:PORT, like 127.0.0.1:8787"
        ));
    };
    if port.parse::<u16>().is_err() {
        return Err(format!(
            "listen address {text}: {port} is not a port (0 to 65535); write HOST:PORT, like 127.0.0.1:8787"
        ));
    }
    if host.is_empty() {
        return Err(format!(
            "listen address {text} has no host; write HOST:PORT, like 127.0.0.1:8787"
        ));
    }
    let found: Vec<SocketAddr> = match text.to_socket_addrs() {
        Ok(found) => found.collect(),
        Err(e) => {
            return Err(format!(
                "cannot resolve the host of listen address {text} ({e}); give an IP address and port, like 127.0.0.1:8787"
            ))
        }
    };
    found
        .iter()
        .find(|a| a.is_ipv4())
        .or(found.first())
        .copied()
        .ok_or_else(|| {
            format!("host {host} of listen address {text} has no address; give an IP address and port, like 127.0.0.1:8787")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_host_names() {
        assert_eq!(
            listen_address("127.0.0.1:8787").unwrap(),
            "127.0.0.1:8787".parse().unwrap()
        );
        assert_eq!(
            listen_address("[::1]:8787").unwrap(),
            "[::1]:8787".parse().unwrap()
        );
        assert!(listen_address("localhost:8787").unwrap().ip().is_loopback());
        assert!(listen_address("localhost")
            .unwrap_err()
            .contains("has no port; write HOST:PORT"));
        assert!(listen_address("localhost:99999")
            .unwrap_err()
            .contains("99999 is not a port"));
        assert!(listen_address("no-such-host.invalid:8787")
            .unwrap_err()
            .starts_with("cannot resolve the host of listen address no-such-host.invalid:8787 ("));
    }
}
