//! One client of each server: takes and releases one named lock over its
//! own connection, either at once (the key is the client's own) or waiting
//! as that peer's clients wait.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use base64::Engine as _;
use locksmith::remote::{HttpStore, RemoteNotifier};
use locksmith_core::store::{Proof, Release, Target};
use locksmith_core::{AcquireRequest, Attempt, Key, LeaseHandle, ReleaseReason, Store, WaitPolicy};

use super::services::Endpoint;

/// The lease every peer asks for, where it has one.
pub(super) const LEASE: Duration = Duration::from_secs(30);

/// How often a Redis waiter tries `SET NX` again.
pub(super) const REDIS_RETRY: Duration = Duration::from_millis(1);

/// Compare-and-delete: releases the key only while it holds this client's token.
const REDIS_RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/// A client holding one connection to one server, for one lock name.
pub(super) trait Locker: Send {
    /// Takes the lock. `None`: one attempt, which must succeed at once;
    /// `Some(until)`: waits for it, until then at most.
    fn acquire(&mut self, wait: Option<Instant>) -> Result<(), String>;
    /// Releases the lock taken last.
    fn release(&mut self) -> Result<(), String>;
}

/// Connects a client of `endpoint` for the lock `name` (`id` is a number
/// for the same lock, used by PostgreSQL's advisory locks), as `owner`.
/// Blocking calls give up after `cap`.
pub(super) fn connect(
    endpoint: &Endpoint,
    name: &str,
    id: i64,
    owner: &str,
    cap: Duration,
) -> Result<Box<dyn Locker>, String> {
    Ok(match endpoint {
        Endpoint::Locksmith(url) => Box::new(LocksmithClient::new(url, name, owner)?),
        Endpoint::Redis(url) => Box::new(RedisClient::new(url, name, owner)?),
        Endpoint::Postgres(conn) => Box::new(PgClient::new(conn, id, cap)?),
        Endpoint::Etcd(url) => Box::new(EtcdClient::new(url, name, cap)?),
    })
}

/// `locksmith serve` through [`HttpStore`]: a fail-fast acquire, or the
/// library's waiting acquire (a long poll the server answers at the grant).
struct LocksmithClient {
    /// The client's own connection.
    store: HttpStore,
    /// The request, built once.
    req: AcquireRequest,
    /// The grant held.
    handle: Option<LeaseHandle>,
}

impl LocksmithClient {
    /// A client with its own connection pool.
    fn new(url: &str, name: &str, owner: &str) -> Result<LocksmithClient, String> {
        let store = HttpStore::open(url, None).map_err(|e| e.to_string())?;
        let key = Key::new(name).map_err(|e| e.to_string())?;
        let req = AcquireRequest {
            ttl: Some(LEASE),
            ..AcquireRequest::exclusive(vec![key], locksmith::host::this_process(owner))
        };
        Ok(LocksmithClient {
            store,
            req,
            handle: None,
        })
    }
}

impl Locker for LocksmithClient {
    fn acquire(&mut self, wait: Option<Instant>) -> Result<(), String> {
        let grant = match wait {
            None => match self.store.acquire(&self.req, None) {
                Ok(Attempt::Granted(g)) => g,
                Ok(Attempt::Blocked(b)) => return Err(format!("blocked: {b:?}")),
                Err(e) => return Err(e.to_string()),
            },
            Some(until) => {
                let left = until
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1));
                locksmith::wait::acquire(
                    &self.store,
                    &RemoteNotifier,
                    &self.req,
                    WaitPolicy::For(left),
                    &AtomicBool::new(false),
                    &mut |_, _| {},
                )
                .map_err(|e| e.to_string())?
            }
        };
        self.handle = Some(grant.handle);
        Ok(())
    }

    fn release(&mut self) -> Result<(), String> {
        let handle = self.handle.take().ok_or("nothing held")?;
        let target = Target {
            key: self.req.keys[0].clone(),
            by: Proof::Handle(handle),
        };
        match self
            .store
            .release_grant(&target, ReleaseReason::Completed)
            .map_err(|e| e.to_string())?
        {
            Release::Released { .. } => Ok(()),
            other => Err(format!("release answered {other:?}")),
        }
    }
}

/// Redis: `SET key token NX PX 30000`, released by a compare-and-delete
/// script (`EVALSHA`, loaded once); a waiter tries again every
/// [`REDIS_RETRY`].
struct RedisClient {
    /// The client's own connection.
    con: redis::Connection,
    /// The key.
    key: String,
    /// This client's token prefix.
    owner: String,
    /// Tokens issued so far.
    n: u64,
    /// The token of the lock held.
    token: String,
    /// SHA1 of [`REDIS_RELEASE`] on the server.
    sha: String,
}

impl RedisClient {
    /// Connects (with TCP_NODELAY) and loads the release script.
    fn new(url: &str, name: &str, owner: &str) -> Result<RedisClient, String> {
        use redis::IntoConnectionInfo as _;
        let info = url
            .into_connection_info()
            .map_err(|e| e.to_string())?
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let mut con = redis::Client::open(info)
            .and_then(|c| c.get_connection())
            .map_err(|e| e.to_string())?;
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(REDIS_RELEASE)
            .query(&mut con)
            .map_err(|e| e.to_string())?;
        Ok(RedisClient {
            con,
            key: name.to_string(),
            owner: owner.to_string(),
            n: 0,
            token: String::new(),
            sha,
        })
    }
}

impl Locker for RedisClient {
    fn acquire(&mut self, wait: Option<Instant>) -> Result<(), String> {
        self.n += 1;
        self.token = format!("{}-{}", self.owner, self.n);
        // Bounded by the deadline; 1 ms apart, so also by count.
        loop {
            let set: Option<String> = redis::cmd("SET")
                .arg(&self.key)
                .arg(&self.token)
                .arg("NX")
                .arg("PX")
                .arg(LEASE.as_millis() as u64)
                .query(&mut self.con)
                .map_err(|e| e.to_string())?;
            if set.is_some() {
                return Ok(());
            }
            match wait {
                Some(until) if Instant::now() < until => std::thread::sleep(REDIS_RETRY),
                Some(_) => return Err("timed out waiting".into()),
                None => return Err(format!("{} is taken", self.key)),
            }
        }
    }

    fn release(&mut self) -> Result<(), String> {
        let n: i64 = redis::cmd("EVALSHA")
            .arg(&self.sha)
            .arg(1)
            .arg(&self.key)
            .arg(&self.token)
            .query(&mut self.con)
            .map_err(|e| e.to_string())?;
        match n {
            1 => Ok(()),
            _ => Err(format!("{} was not held by {}", self.key, self.token)),
        }
    }
}

/// PostgreSQL session-level advisory locks on one session per client:
/// `pg_advisory_lock` blocks natively; `lock_timeout` bounds the wait.
struct PgClient {
    /// The client's own session.
    client: postgres::Client,
    /// `SELECT pg_advisory_lock($1)`, prepared.
    lock: postgres::Statement,
    /// `SELECT pg_advisory_unlock($1)`, prepared.
    unlock: postgres::Statement,
    /// The lock's number.
    id: i64,
}

impl PgClient {
    /// Connects and prepares both statements.
    fn new(conn: &str, id: i64, cap: Duration) -> Result<PgClient, String> {
        let mut client =
            postgres::Client::connect(conn, postgres::NoTls).map_err(|e| e.to_string())?;
        client
            .batch_execute(&format!("SET lock_timeout = {}", cap.as_millis().max(1)))
            .map_err(|e| e.to_string())?;
        let lock = client
            .prepare("SELECT pg_advisory_lock($1)")
            .map_err(|e| e.to_string())?;
        let unlock = client
            .prepare("SELECT pg_advisory_unlock($1)")
            .map_err(|e| e.to_string())?;
        Ok(PgClient {
            client,
            lock,
            unlock,
            id,
        })
    }
}

impl Locker for PgClient {
    fn acquire(&mut self, _wait: Option<Instant>) -> Result<(), String> {
        self.client
            .execute(&self.lock, &[&self.id])
            .map(drop)
            .map_err(|e| e.to_string())
    }

    fn release(&mut self) -> Result<(), String> {
        let row = self
            .client
            .query_one(&self.unlock, &[&self.id])
            .map_err(|e| e.to_string())?;
        match row.try_get::<_, bool>(0) {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!("advisory lock {} was not held", self.id)),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// etcd v3 `Lock` through its JSON gateway, on one lease per client
/// granted at the start; the lock call blocks natively.
struct EtcdClient {
    /// The client's own connection pool.
    agent: ureq::Agent,
    /// `http://127.0.0.1:PORT`.
    base: String,
    /// The lease id, as etcd's JSON writes it.
    lease: serde_json::Value,
    /// The lock name, base64.
    name: String,
    /// The key of the lock held (base64), from the lock answer.
    held: Option<serde_json::Value>,
}

impl EtcdClient {
    /// Grants the client's lease (TTL 30 s, or longer than `cap`).
    fn new(url: &str, name: &str, cap: Duration) -> Result<EtcdClient, String> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(cap + Duration::from_secs(5)))
            .http_status_as_error(false)
            .build()
            .into();
        let mut c = EtcdClient {
            agent,
            base: url.to_string(),
            lease: serde_json::Value::Null,
            name: base64::engine::general_purpose::STANDARD.encode(name),
            held: None,
        };
        let ttl = LEASE.as_secs().max(cap.as_secs() + 10);
        let granted = c.post("/v3/lease/grant", &serde_json::json!({ "TTL": ttl }))?;
        c.lease = granted
            .get("ID")
            .cloned()
            .ok_or_else(|| format!("lease grant answered {granted}"))?;
        Ok(c)
    }

    /// One JSON call; an answer with an error is an error.
    fn post(&self, path: &str, body: &serde_json::Value) -> Result<serde_json::Value, String> {
        let mut resp = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .send(body.to_string())
            .map_err(|e| format!("{path}: {e}"))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("{path}: {e}"))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{path}: {e}: {text}"))?;
        if status != 200 || v.get("error").is_some() {
            return Err(format!("{path} answered {status}: {text}"));
        }
        Ok(v)
    }
}

impl Locker for EtcdClient {
    fn acquire(&mut self, _wait: Option<Instant>) -> Result<(), String> {
        let v = self.post(
            "/v3/lock/lock",
            &serde_json::json!({ "name": self.name, "lease": self.lease }),
        )?;
        let key = v
            .get("key")
            .cloned()
            .ok_or_else(|| format!("lock answered {v}"))?;
        self.held = Some(key);
        Ok(())
    }

    fn release(&mut self) -> Result<(), String> {
        let key = self.held.take().ok_or("nothing held")?;
        self.post("/v3/lock/unlock", &serde_json::json!({ "key": key }))
            .map(drop)
    }
}
