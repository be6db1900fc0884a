//! Who may read what under `/_keyproxy/`. health and ready are open to all. Once an admin is
//! configured (`admin_token`, or a client with `admin = true`), only an admin opens status,
//! reload, everyone's usage and metrics; without one, any client token does, as before, since
//! an existing setup must keep working (`check` warns about it). A client token always reads
//! its own `/_keyproxy/me`.

use http::header::AUTHORIZATION;
use http::Request;

use crate::config::clients::{presented, Client};
use crate::proxy::{LocalError, Snapshot};

/// Admits the request to an endpoint that shows or changes everything (status, reload,
/// usage of everyone, metrics), or says why not.
pub fn admin<B>(snapshot: &Snapshot, req: &Request<B>) -> Result<(), LocalError> {
    let config = &snapshot.config;
    let token = presented(req.headers(), &AUTHORIZATION);
    if !config.has_admin() {
        if config.clients.is_empty() {
            return Ok(());
        }
        let token = token.ok_or(LocalError::MissingToken)?;
        return config
            .clients
            .find(token)
            .map(|_| ())
            .ok_or(LocalError::InvalidToken);
    }
    let path = req.uri().path();
    let Some(token) = token else {
        return Err(LocalError::AdminTokenNeeded {
            path: path.to_owned(),
            presented: false,
        });
    };
    if config
        .admin_token
        .as_ref()
        .is_some_and(|a| a.matches(token))
    {
        return Ok(());
    }
    match config.clients.find(token) {
        Some(c) if c.admin => Ok(()),
        Some(c) => Err(LocalError::AdminOnly {
            path: path.to_owned(),
            client: c.name.clone(),
        }),
        None => Err(LocalError::AdminTokenNeeded {
            path: path.to_owned(),
            presented: true,
        }),
    }
}

/// The client whose token the request carries, for `/_keyproxy/me`.
pub fn client<'a, B>(snapshot: &'a Snapshot, req: &Request<B>) -> Result<&'a Client, LocalError> {
    let config = &snapshot.config;
    if config.clients.is_empty() {
        return Err(LocalError::NotAClient {
            why: "this keyproxy has no [[clients]]",
        });
    }
    let token = presented(req.headers(), &AUTHORIZATION).ok_or(LocalError::MissingToken)?;
    if let Some(c) = config.clients.find(token) {
        return Ok(c);
    }
    if config
        .admin_token
        .as_ref()
        .is_some_and(|a| a.matches(token))
    {
        return Err(LocalError::NotAClient {
            why: "the admin token is no client's",
        });
    }
    Err(LocalError::InvalidToken)
}
