//! Three hosts on one machine: network namespaces for the server and two
//! workers, linked by veth pairs. All traffic stays inside namespaces this
//! test makes (10.77.x addresses) and goes away with them.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Env, code, stderr};

/// Namespaces `ls<pid>-srv`, `-a`, `-b`; removed on drop.
struct Hosts {
    prefix: String,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Hosts {
    /// The three hosts, or `None` where namespaces cannot be made (not root).
    fn make() -> Option<Hosts> {
        let h = Hosts {
            prefix: format!("ls{}", std::process::id()),
        };
        if !ip(&["netns", "add", &h.ns("srv")]) {
            return None;
        }
        for (side, net) in [("a", 1), ("b", 2)] {
            let (outer, inner) = (
                format!("{}s{side}", h.prefix),
                format!("{}{side}", h.prefix),
            );
            let ok = ip(&["netns", "add", &h.ns(side)])
                && ip(&[
                    "link", "add", &outer, "type", "veth", "peer", "name", &inner,
                ])
                && ip(&["link", "set", &outer, "netns", &h.ns("srv")])
                && ip(&["link", "set", &inner, "netns", &h.ns(side)])
                && h.exec_ok(
                    "srv",
                    &[
                        "ip",
                        "addr",
                        "add",
                        &format!("10.77.{net}.1/24"),
                        "dev",
                        &outer,
                    ],
                )
                && h.exec_ok("srv", &["ip", "link", "set", &outer, "up"])
                && h.exec_ok(
                    side,
                    &[
                        "ip",
                        "addr",
                        "add",
                        &format!("10.77.{net}.2/24"),
                        "dev",
                        &inner,
                    ],
                )
                && h.exec_ok(side, &["ip", "link", "set", &inner, "up"])
                && h.exec_ok(side, &["ip", "link", "set", "lo", "up"]);
            assert!(ok, "could not link host {side}");
        }
        assert!(h.exec_ok("srv", &["ip", "link", "set", "lo", "up"]));
        Some(h)
    }

    fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    fn exec_ok(&self, host: &str, args: &[&str]) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(host)])
            .args(args)
            .status()
            .is_ok_and(|s| s.success())
    }

    /// `locksmith ARGS` on `host`, with the env's settings.
    fn locksmith(&self, env: &Env, host: &str, args: &[&str]) -> Command {
        let inner = env.cmd(args);
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(host)])
            .arg(inner.get_program())
            .args(inner.get_args());
        for (k, v) in inner.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c.stdin(Stdio::null());
        c
    }

    /// Takes host `a`'s link down (or up again), from the server's side.
    fn link_a(&self, up: bool) {
        let outer = format!("{}sa", self.prefix);
        assert!(self.exec_ok(
            "srv",
            &["ip", "link", "set", &outer, if up { "up" } else { "down" }]
        ));
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for n in ["a", "b", "srv"] {
            ip(&["netns", "del", &self.ns(n)]);
        }
    }
}

/// A child process killed when the test ends, however it ends (before the
/// namespaces it runs in are removed).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn json_out(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
}

#[test]
fn a_worker_cut_off_loses_its_lock_to_the_other_and_stops_its_command() {
    let Some(hosts) = Hosts::make() else {
        eprintln!("skipped: network namespaces need root (ip netns add failed)");
        return;
    };
    let home = Env::new();
    let token = |name: &str| {
        let out = home.run(&["token", "create", "--name", name, "--role", "client"]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (ta, tb) = (token("worker-a"), token("worker-b"));
    let mut server: Child = hosts
        .locksmith(
            &home,
            "srv",
            &[
                "serve",
                "--listen",
                "0.0.0.0:7420",
                "--sweep-interval",
                "500ms",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = server.stdout.take().unwrap();
    let _server = KillOnDrop(server);
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first).unwrap();
    assert!(
        first.starts_with("listening on http://0.0.0.0:7420"),
        "{first}"
    );
    let worker = |host: &str, token: &str, args: &[&str]| {
        let env = Env::new();
        let url = if host == "a" {
            "http://10.77.1.1:7420"
        } else {
            "http://10.77.2.1:7420"
        };
        let mut c = hosts.locksmith(&env, host, args);
        c.env("LOCKSMITH_SERVER", url)
            .env("LOCKSMITH_TOKEN", token)
            .env("LOCKSMITH_OWNER", format!("worker-{host}"));
        (c, env)
    };
    // A holds the lock under run, with a 3 s lease.
    let (mut a_run, a_env) = worker(
        "a",
        &ta,
        &[
            "run",
            "-l",
            "deploy/prod",
            "--ttl",
            "3s",
            "--",
            "sh",
            "-c",
            "trap 'echo TERM > \"$LOCKSMITH_HOME/termed\"; exit 143' TERM; echo $LOCKSMITH_FENCE > \"$LOCKSMITH_HOME/fence\"; echo $LOCKSMITH_HANDLE > \"$LOCKSMITH_HOME/handle\"; while :; do sleep 0.05; done",
        ],
    );
    let a_run = a_run
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let fence_file = a_env.file("fence");
    let end = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&fence_file).map_or(true, |f| f.trim().is_empty()) {
        assert!(Instant::now() < end, "A never held the lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    let a_fence: u64 = std::fs::read_to_string(&fence_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // B waits for it; A is still renewing.
    let (mut b_wait, _b_env) = worker(
        "b",
        &tb,
        &[
            "acquire",
            "deploy/prod",
            "--wait",
            "30s",
            "--ttl",
            "1m",
            "--json",
        ],
    );
    let b_wait = b_wait
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(3500));
    let cut = Instant::now();
    hosts.link_a(false);
    // A cannot renew: its own deadline stops CMD, exit 7.
    let a_out = a_run.wait_with_output().unwrap();
    let a_took = cut.elapsed();
    assert_eq!(code(&a_out), 7, "{}", stderr(&a_out));
    assert_eq!(
        std::fs::read_to_string(a_env.file("termed"))
            .unwrap()
            .trim(),
        "TERM"
    );
    assert!(
        a_took < Duration::from_secs(8),
        "A stopped by its own deadline: {a_took:?}"
    );
    // B gets the lock once A's lease has run out on the server, with a higher fence.
    let b_out = b_wait.wait_with_output().unwrap();
    assert_eq!(code(&b_out), 0, "{}", stderr(&b_out));
    let b = json_out(&b_out);
    let b_fence = b["fence"].as_u64().unwrap();
    assert!(b_fence > a_fence, "fences rise: {a_fence} then {b_fence}");
    assert!(
        cut.elapsed() >= Duration::from_millis(500),
        "B waited for A's lease"
    );
    // A comes back: its late renew is refused as lost.
    hosts.link_a(true);
    let handle = std::fs::read_to_string(a_env.file("handle"))
        .unwrap()
        .trim()
        .to_string();
    let (mut late, _) = worker("a", &ta, &["renew", "deploy/prod", "--handle", &handle]);
    let late = late.output().unwrap();
    assert_eq!(code(&late), 7, "{}", stderr(&late));
}
