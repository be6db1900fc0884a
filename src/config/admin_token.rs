//! The admin token (`admin_token` / `admin_token_sha256`): once one is configured, it alone
//! opens status, reload, everyone's usage and metrics, so an agent's client token no longer
//! reads what the others spend. Known, like client tokens, only by its SHA-256.

use super::clients::{
    parse_hex, sha256, Clients, Digest, EXAMPLE_TOKEN_MARK, EXAMPLE_TOKEN_SHA256,
};
use super::Config;

/// The SHA-256 of the admin token.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(Digest);

/// The digest is no secret, but there is nothing in it worth printing either.
impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

impl AdminToken {
    /// From `admin_token` or `admin_token_sha256` (at most one), with the rules of client tokens.
    pub fn from_raw(token: Option<String>, hex: Option<String>) -> Result<Option<Self>, String> {
        match (token, hex) {
            (None, None) => Ok(None),
            (Some(_), Some(_)) => {
                Err("give one of admin_token and admin_token_sha256, not both".into())
            }
            (Some(token), None) if token.len() < 16 => Err(
                "admin_token is shorter than 16 characters; use a long random one (openssl rand -hex 24)"
                    .into(),
            ),
            // Refused like the examples' client tokens: anyone can read them.
            (Some(token), None) if token.contains(EXAMPLE_TOKEN_MARK) => Err(
                "admin_token is the example's placeholder, which anyone can read; make one with openssl rand -hex 24"
                    .into(),
            ),
            (None, Some(hex)) if hex.eq_ignore_ascii_case(EXAMPLE_TOKEN_SHA256) => Err(
                "admin_token_sha256 is the example's, not of a token of yours; make a token with openssl rand -hex 24 and put its SHA-256 here"
                    .into(),
            ),
            (Some(token), None) => Ok(Some(Self(sha256(&token)))),
            (None, Some(hex)) => parse_hex(&hex).map(|d| Some(Self(d))).ok_or_else(|| {
                "admin_token_sha256 must be 64 lowercase hex characters (sha256sum of the token)"
                    .into()
            }),
        }
    }

    /// The client whose token is the admin token too: an agent holding it would be admin.
    pub fn client_with_it<'a>(&self, clients: &'a Clients) -> Option<&'a str> {
        clients.by_digest(&self.0).map(|c| c.name.as_str())
    }

    /// Whether `token` is the admin token. The digests are compared without an early exit, so
    /// the time taken says nothing of how much of them matched.
    pub fn matches(&self, token: &str) -> bool {
        let presented = sha256(token);
        presented
            .iter()
            .zip(&self.0)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl Config {
    /// Is an admin configured (a top-level admin token, or a client with `admin = true`)? Then
    /// only an admin opens status, reload, everyone's usage and metrics.
    pub fn has_admin(&self) -> bool {
        self.admin_token.is_some() || self.clients.iter().any(|c| c.admin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_token_is_known_by_its_digest_either_way() {
        let token = "kp-admin-0123456789abcdef";
        let hex: String = sha256(token).iter().map(|b| format!("{b:02x}")).collect();
        for admin in [
            AdminToken::from_raw(Some(token.into()), None),
            AdminToken::from_raw(None, Some(hex.clone())),
        ] {
            let admin = admin.unwrap().unwrap();
            assert!(admin.matches(token));
            assert!(!admin.matches("kp-admin-0123456789abcdeF"));
            assert!(!admin.matches(""));
        }
        assert!(AdminToken::from_raw(None, None).unwrap().is_none());
        assert!(AdminToken::from_raw(Some("short".into()), None).is_err());
        assert!(AdminToken::from_raw(None, Some(hex.to_uppercase())).is_err());
        assert!(AdminToken::from_raw(Some(token.into()), Some(hex)).is_err());
        let example = "kp-replace-me-with-openssl-rand-hex-24";
        assert!(AdminToken::from_raw(Some(example.into()), None).is_err());
        let example = "21528b2600d31fdb7209da6a7fd3b819c5125da3107090bb6c5dbb493c85d4d2";
        assert!(AdminToken::from_raw(None, Some(example.into())).is_err());
    }

    #[test]
    fn a_config_is_refused_when_the_admin_token_is_also_a_clients() {
        let token = "kp-shared-0123456789abcdef";
        let text = format!(
            "admin_token = \"{token}\"\n[[clients]]\nname = \"agent\"\ntoken = \"{token}\"\nprofiles = [\"p\"]\n"
        );
        let err = crate::config::parse(&text, std::path::Path::new("k.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("k.toml:1"), "{err}");
        assert!(err.contains("also client 'agent'"), "{err}");
        assert!(!err.contains(token), "{err}");
        let text = text.replace("admin_token", "# admin_token") + "admin = true\n";
        let config = crate::config::parse(&text, std::path::Path::new("k.toml")).unwrap();
        assert!(config.has_admin());
    }
}
