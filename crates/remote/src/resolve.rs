//! How the server's name becomes an address, once instead of per call.
//!
//! ureq resolves the host of every request before it looks for a pooled
//! connection, and with a timeout set it does so on a thread of its own:
//! one thread started and ended per call, even when the call then goes
//! over a kept-alive connection. A store talks to one server, so
//! [`Resolve`] answers an address given as digits at once, and keeps the
//! answer for a name for [`KEEP_NAME`] before it asks again.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// How long the addresses of a server name are used before the name is
/// looked up again (for new connections; a kept-alive one stays put).
pub(crate) const KEEP_NAME: Duration = Duration::from_secs(10);

/// A resolver for a client of one server.
#[derive(Debug, Default)]
pub(crate) struct Resolve {
    by_name: DefaultResolver,
    /// The last lookup of a name: the `host:port` it was for, when, and
    /// what it answered.
    kept: Mutex<Option<(String, Instant, ResolvedSocketAddrs)>>,
}

impl Resolver for Resolve {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        self.resolve_at(uri, config, timeout, Instant::now())
    }
}

impl Resolve {
    /// [`Resolver::resolve`] at the time `now`.
    fn resolve_at(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
        now: Instant,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return self.by_name.resolve(uri, config, timeout);
        };
        let Some(name) = DefaultResolver::host_and_port(scheme, authority) else {
            return self.by_name.resolve(uri, config, timeout);
        };
        if let Ok(addr) = name.parse::<SocketAddr>() {
            let mut addrs = self.empty();
            addrs.push(addr);
            return Ok(addrs);
        }
        if let Some((kept, at, addrs)) = &*self.kept.lock().unwrap_or_else(|p| p.into_inner())
            && *kept == name
            && now.duration_since(*at) < KEEP_NAME
        {
            return Ok(addrs.clone());
        }
        let addrs = self.by_name.resolve(uri, config, timeout)?;
        *self.kept.lock().unwrap_or_else(|p| p.into_inner()) = Some((name, now, addrs.clone()));
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve_at(r: &Resolve, url: &str, now: Instant) -> Vec<SocketAddr> {
        let uri: Uri = url.parse().unwrap();
        let config = Config::default();
        let addrs = r
            .resolve_at(&uri, &config, NextTimeout::default(), now)
            .unwrap();
        addrs.iter().copied().collect()
    }

    fn resolve(r: &Resolve, url: &str) -> Vec<SocketAddr> {
        resolve_at(r, url, Instant::now())
    }

    fn looked_up_at(r: &Resolve) -> Option<Instant> {
        r.kept.lock().unwrap().as_ref().map(|k| k.1)
    }

    #[test]
    fn an_address_given_as_digits_is_taken_as_it_is() {
        let r = Resolve::default();
        assert_eq!(
            resolve(&r, "http://127.0.0.1:7420/v1/locks"),
            vec!["127.0.0.1:7420".parse().unwrap()]
        );
        assert_eq!(
            resolve(&r, "http://[::1]:7420/v1/locks"),
            vec!["[::1]:7420".parse().unwrap()]
        );
        assert_eq!(
            resolve(&r, "http://10.1.2.3/v1/locks"),
            vec!["10.1.2.3:80".parse().unwrap()]
        );
        assert_eq!(looked_up_at(&r), None, "no lookup was made");
    }

    #[test]
    fn a_name_is_looked_up_once_and_kept_for_a_while() {
        let r = Resolve::default();
        let t0 = Instant::now();
        let first = resolve_at(&r, "http://localhost:7420/v1/locks", t0);
        assert!(!first.is_empty());
        assert!(
            first
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 7420)
        );
        assert_eq!(looked_up_at(&r), Some(t0));
        let later = t0 + KEEP_NAME - Duration::from_millis(1);
        assert_eq!(
            resolve_at(&r, "http://localhost:7420/v1/grants", later),
            first
        );
        assert_eq!(looked_up_at(&r), Some(t0), "the kept answer was used");
        let stale = t0 + KEEP_NAME;
        assert_eq!(
            resolve_at(&r, "http://localhost:7420/v1/grants", stale),
            first
        );
        assert_eq!(looked_up_at(&r), Some(stale), "looked up again");
        // Another port is another lookup.
        let other = resolve(&r, "http://localhost:7421/");
        assert!(other.iter().all(|a| a.port() == 7421));
        assert_eq!(r.kept.lock().unwrap().as_ref().unwrap().0, "localhost:7421");
    }
}
