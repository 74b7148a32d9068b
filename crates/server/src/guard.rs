//! Checks every request passes before a handler sees it: the `Host` header
//! (against DNS rebinding) and, for requests that change state, that they
//! do not come from another site's page.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State as Shared};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use locksmith_core::Code;

use crate::State;
use crate::error::ApiError;
use crate::tokens::Role;

/// Refuses requests for a host name that is not allowed, and state
/// changes from a cross-site browser request.
pub(crate) async fn check(Shared(st): Shared<Arc<State>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    if let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok())
        && !host_allowed(host, &st.settings.allowed_hosts)
    {
        return ApiError::new(
            Code::Forbidden,
            format!(
                "host {host:?} is not served here; name the server by IP address or localhost, or start it with --allow-host {}",
                host_name(host)
            ),
        )
        .into_response();
    }
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if changes {
        let cross = headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == "cross-site");
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        let foreign_origin = match (origin, host) {
            (Some("null"), _) | (Some(_), None) => true,
            (Some(o), Some(h)) => o
                .split_once("://")
                .is_none_or(|(_, rest)| !rest.eq_ignore_ascii_case(h)),
            (None, _) => false,
        };
        if cross || foreign_origin {
            return ApiError::new(
                Code::Forbidden,
                "a request that changes locks may not come from another site's page",
            )
            .into_response();
        }
    }
    let resp = next.run(req).await;
    if changes {
        // The event stream looks at the history now rather than at its next tick.
        st.feed.changed.notify_one();
    }
    resp
}

/// The host name of a `Host` header, without its port.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// IP literals cannot be rebound; of names, loopback and the allowed ones.
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = host_name(host);
    name.parse::<IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_allowed_by_address_or_name() {
        let allowed = vec!["locks.internal".to_string()];
        for ok in [
            "127.0.0.1:7420",
            "localhost:7420",
            "[::1]:7420",
            "10.1.2.3",
            "locks.internal:80",
            "LOCALHOST",
        ] {
            assert!(host_allowed(ok, &allowed), "{ok}");
        }
        for bad in [
            "evil.example:7420",
            "127.0.0.1.evil.example",
            "locks.internal.evil",
        ] {
            assert!(!host_allowed(bad, &allowed), "{bad}");
        }
    }
}

/// Who is calling: the role of its token, or `None` under local trust (no
/// token configured, loopback only), and the token's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Caller(pub Option<Role>, pub Option<String>);

impl Caller {
    /// Refuses unless the caller has at least `role`; `what` names the act.
    pub(crate) fn require(&self, role: Role, what: &str) -> Result<(), ApiError> {
        match self.0 {
            Some(have) if have < role => Err(ApiError::new(
                Code::Forbidden,
                format!(
                    "{what} needs a token of role {}; this token's role is {}",
                    role.name(),
                    have.name()
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// The least role a route needs; `None` for the probes anyone may call.
fn needed(method: &Method, path: &str) -> Option<Role> {
    match (method, path) {
        (_, "/healthz" | "/readyz" | "/v1/openapi.json") => None,
        // The dashboard's page and assets hold no data: the page asks the
        // API with the token the user signs in with.
        (&Method::GET | &Method::HEAD, "/") => None,
        (&Method::GET | &Method::HEAD, p) if p.starts_with("/assets/") => None,
        (&Method::GET | &Method::HEAD, _) => Some(Role::Viewer),
        (_, "/v1/reap") => Some(Role::Admin),
        (_, p) if p.starts_with("/v1/locks/") && p.ends_with("/force-release") => Some(Role::Admin),
        _ => Some(Role::Client),
    }
}

/// Checks the bearer token when tokens are configured and records the
/// caller's role for the handlers.
pub(crate) async fn auth(Shared(st): Shared<Arc<State>>, mut req: Request, next: Next) -> Response {
    let caller = {
        let tokens = st.tokens.read().unwrap_or_else(|p| p.into_inner());
        match needed(req.method(), req.uri().path()) {
            _ if tokens.is_empty() => Caller(None, None),
            None => Caller(Some(Role::Viewer), None),
            Some(role) => {
                let presented = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::trim);
                let entry = match presented {
                    None => {
                        return unauthorized(
                            "this server needs a token: send Authorization: Bearer <token> (the CLI reads LOCKSMITH_TOKEN)",
                        );
                    }
                    Some(t) => match tokens.check(t) {
                        None => {
                            return unauthorized(
                                "the token is not known to this server (revoked, mistyped, or from another server)",
                            );
                        }
                        Some(e) => e,
                    },
                };
                let caller = Caller(Some(entry.role), Some(entry.name.clone()));
                if let Err(e) = caller.require(role, "this request") {
                    return e.into_response();
                }
                caller
            }
        }
    };
    req.extensions_mut().insert(caller);
    next.run(req).await
}

fn unauthorized(detail: &str) -> Response {
    let mut resp = ApiError::new(Code::Unauthorized, detail).into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer"),
    );
    resp
}
