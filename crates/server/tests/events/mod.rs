//! `GET /v1/events`: live events, resume with `Last-Event-ID`, a reset when
//! the history no longer holds the id, keep-alives, the end at shutdown.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use locksmith_core::{Attempt, ReleaseReason, Store};
use locksmith_server::Settings;
use locksmith_testkit::{by_handle, request};
use serde_json::Value;

use crate::common::Server;

/// One server-sent event: id, name, data; or a keep-alive comment.
#[derive(Debug, Clone, PartialEq)]
enum Got {
    Event {
        id: Option<i64>,
        name: String,
        data: Value,
    },
    Comment,
}

struct Subscriber {
    lines: BufReader<TcpStream>,
}

impl Subscriber {
    fn open(addr: SocketAddr, path: &str, last: Option<i64>) -> Subscriber {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let resume = last.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{resume}\r\n"
        )
        .unwrap();
        let mut lines = BufReader::new(s);
        let mut status = String::new();
        lines.read_line(&mut status).unwrap();
        assert!(status.contains(" 200 "), "{status}");
        loop {
            let mut l = String::new();
            lines.read_line(&mut l).unwrap();
            if l == "\r\n" {
                break;
            }
        }
        Subscriber { lines }
    }

    /// The next event or comment (chunked framing lines are skipped).
    fn next(&mut self) -> Option<Got> {
        let (mut id, mut name, mut data) = (None, String::from("message"), String::new());
        let mut any = false;
        loop {
            let mut l = String::new();
            match self.lines.read_line(&mut l) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            let l = l.trim_end_matches(['\r', '\n']);
            if let Some(c) = l.strip_prefix(':') {
                let _ = c;
                return Some(Got::Comment);
            } else if let Some(v) = l.strip_prefix("id:") {
                id = v.trim().parse().ok();
                any = true;
            } else if let Some(v) = l.strip_prefix("event:") {
                name = v.trim().to_string();
                any = true;
            } else if let Some(v) = l.strip_prefix("data:") {
                data.push_str(v.trim());
                any = true;
            } else if l.is_empty() && any {
                return Some(Got::Event {
                    id,
                    name,
                    data: serde_json::from_str(&data).unwrap_or(Value::Null),
                });
            }
            // Chunk sizes and empty chunks fall through.
        }
    }

    /// The next real event, skipping keep-alives.
    fn event(&mut self) -> (Option<i64>, String, Value) {
        loop {
            match self.next() {
                Some(Got::Event { id, name, data }) => return (id, name, data),
                Some(Got::Comment) => continue,
                None => panic!("the stream ended"),
            }
        }
    }
}

#[test]
fn events_arrive_live_and_resume_after_the_last_id() {
    let server = Server::start_real(Settings::default());
    let store = server.client();
    let mut sub = Subscriber::open(server.addr, "/v1/events?prefix=job", None);
    // Give the subscription a moment to be in place before the first change.
    std::thread::sleep(Duration::from_millis(100));
    let Attempt::Granted(g) = store.acquire(&request("A", &["job/1"]), None).unwrap() else {
        panic!()
    };
    store.acquire(&request("B", &["other"]), None).unwrap();
    store
        .release(&by_handle("job/1", &g), ReleaseReason::Completed)
        .unwrap();
    let (id1, name1, data1) = sub.event();
    assert_eq!(
        (
            name1.as_str(),
            data1["key"].as_str(),
            data1["owner"].as_str()
        ),
        ("acquired", Some("job/1"), Some("A"))
    );
    let (id2, name2, data2) = sub.event();
    assert_eq!(
        (name2.as_str(), data2["reason"].as_str()),
        ("released", Some("completed"))
    );
    assert!(id2 > id1, "ids rise");
    assert!(
        !data1.to_string().contains(g.handle.expose()),
        "no handle in events"
    );
    drop(sub);
    // Missed while away: replayed after the last id seen, then live.
    let Attempt::Granted(g2) = store.acquire(&request("C", &["job/2"]), None).unwrap() else {
        panic!()
    };
    let mut again = Subscriber::open(server.addr, "/v1/events?prefix=job", id2);
    let (id3, name3, data3) = again.event();
    assert_eq!(
        (name3.as_str(), data3["owner"].as_str()),
        ("acquired", Some("C"))
    );
    assert!(id3 > id2);
    store
        .release(&by_handle("job/2", &g2), ReleaseReason::Failed)
        .unwrap();
    let (id4, name4, data4) = again.event();
    assert_eq!(
        (name4.as_str(), data4["reason"].as_str()),
        ("released", Some("failed"))
    );
    assert!(id4 > id3);
}

#[test]
fn a_stream_opened_after_unwatched_changes_starts_at_the_present() {
    let server = Server::start_real(Settings::default());
    let store = server.client();
    for i in 0..3 {
        store
            .acquire(&request("A", &[&format!("job/old/{i}")]), None)
            .unwrap();
    }
    // With nobody watching, the stream keeps only its place in the history;
    // it looks at least every 250 ms.
    std::thread::sleep(Duration::from_millis(1500));
    let mut sub = Subscriber::open(server.addr, "/v1/events?prefix=job", None);
    std::thread::sleep(Duration::from_millis(100));
    store.acquire(&request("B", &["job/new"]), None).unwrap();
    let (_, name, data) = sub.event();
    assert_eq!(
        (name.as_str(), data["key"].as_str()),
        ("acquired", Some("job/new")),
        "only what happened after the stream opened"
    );
}

#[test]
fn a_pruned_id_gets_a_reset() {
    let server = Server::start_manual();
    let store = server.client();
    store.acquire(&request("A", &["old"]), None).unwrap();
    let first = store.history(&Default::default()).unwrap()[0].id;
    server
        .clock
        .as_ref()
        .unwrap()
        .advance(Duration::from_secs(31 * 24 * 3600));
    store.acquire(&request("A", &["new"]), None).unwrap();
    assert!(server.store.prune_history().unwrap() >= 1);
    let mut sub = Subscriber::open(server.addr, "/v1/events", Some(first));
    let (_, name, data) = sub.event();
    assert_eq!(
        (name.as_str(), data["reason"].as_str()),
        ("reset", Some("history_pruned"))
    );
}

#[test]
fn an_idle_stream_gets_keep_alives_and_ends_when_the_server_stops() {
    let mut server = Server::start_real(Settings {
        keep_alive: Duration::from_millis(100),
        ..Settings::default()
    });
    let mut sub = Subscriber::open(server.addr, "/v1/events", None);
    let started = Instant::now();
    assert_eq!(sub.next(), Some(Got::Comment));
    assert!(started.elapsed() < Duration::from_secs(5));
    let stopper = std::thread::spawn(move || {
        let t = Instant::now();
        server.stop().unwrap();
        t.elapsed()
    });
    while sub.next().is_some() {}
    let took = stopper.join().unwrap();
    assert!(
        took < Duration::from_secs(5),
        "a stream does not hold the shutdown: {took:?}"
    );
}
