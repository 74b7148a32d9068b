//! Following a server's event stream (`GET /v1/events`, server-sent
//! events) over a plain socket with a read deadline: a connection that dies
//! quietly is noticed when no keep-alive came for three of their periods,
//! and the client connects again with `Last-Event-ID`, so nothing is lost.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use locksmith_core::{Event, StoreError};

use crate::{HttpStore, encode};

/// The server sends a keep-alive at least this often (15 s by default);
/// three missed ones mean the connection is gone.
const SILENCE: Duration = Duration::from_secs(45);

/// One item of the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Watched {
    /// An event of the history.
    Event(Event),
    /// Events were missed that cannot be replayed (`history_pruned`,
    /// `fell_behind`): read the state again.
    Reset(String),
}

impl HttpStore {
    /// Follows the events of keys under `prefix` from after event `after`
    /// (or from now), calling `each` until it returns false. A broken or
    /// silent connection is opened again after the last event seen.
    pub fn watch(
        &self,
        prefix: Option<&str>,
        after: Option<i64>,
        each: &mut dyn FnMut(Watched) -> bool,
    ) -> Result<(), StoreError> {
        let mut last = after;
        let mut failures = 0u32;
        loop {
            match self.follow(prefix, last, each, &mut last) {
                Ok(true) => return Ok(()),
                Ok(false) => failures = 0,
                Err(e) if failures >= 5 => return Err(e),
                Err(_) => failures += 1,
            }
            std::thread::sleep(Duration::from_millis(200 * u64::from(failures.max(1))));
        }
    }

    /// One connection; true when `each` asked to stop.
    fn follow(
        &self,
        prefix: Option<&str>,
        after: Option<i64>,
        each: &mut dyn FnMut(Watched) -> bool,
        last: &mut Option<i64>,
    ) -> Result<bool, StoreError> {
        let unreachable = |e: std::io::Error| {
            StoreError::Busy(format!(
                "cannot follow the events of the locksmith server at {}: {e}",
                self.base
            ))
        };
        let hostport = self
            .base
            .strip_prefix("http://")
            .ok_or_else(|| StoreError::Invalid("watch follows http:// servers".into()))?;
        let mut sock = TcpStream::connect(hostport).map_err(unreachable)?;
        sock.set_read_timeout(Some(SILENCE)).map_err(unreachable)?;
        let query = prefix.map_or(String::new(), |p| format!("?prefix={}", encode(p)));
        let mut head = format!(
            "GET /v1/events{query} HTTP/1.1\r\nHost: {hostport}\r\nAccept: text/event-stream\r\n"
        );
        if let Some(id) = after {
            head.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        if let Some(t) = &self.token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        head.push_str("\r\n");
        sock.write_all(head.as_bytes()).map_err(unreachable)?;
        let mut r = BufReader::new(sock);
        let mut status = String::new();
        r.read_line(&mut status).map_err(unreachable)?;
        let code: u16 = status
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let mut chunked = false;
        loop {
            let mut l = String::new();
            r.read_line(&mut l).map_err(unreachable)?;
            let lower = l.to_ascii_lowercase();
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
            if l == "\r\n" || l.is_empty() {
                break;
            }
        }
        if code != 200 {
            let mut body = Vec::new();
            let _ = r.take(64 * 1024).read_to_end(&mut body);
            let text = dechunk(&body, chunked);
            return Err(crate::problem(&self.base, code, &text).into_store_error());
        }
        let mut body: Box<dyn BufRead> = match chunked {
            true => Box::new(BufReader::new(Chunked {
                inner: r,
                left: 0,
                done: false,
            })),
            false => Box::new(r),
        };
        let (mut id, mut name, mut data) = (None::<i64>, String::new(), String::new());
        loop {
            let mut l = String::new();
            match body.read_line(&mut l) {
                Ok(0) => return Ok(false),
                Ok(_) => {}
                Err(e) => return Err(unreachable(e)),
            }
            let l = l.trim_end_matches(['\r', '\n']);
            if let Some(v) = l.strip_prefix("id:") {
                id = v.trim().parse().ok();
            } else if let Some(v) = l.strip_prefix("event:") {
                name = v.trim().to_string();
            } else if let Some(v) = l.strip_prefix("data:") {
                data.push_str(v.trim_start());
            } else if l.is_empty() && !data.is_empty() {
                let item = match name.as_str() {
                    "reset" => {
                        let why: serde_json::Value =
                            serde_json::from_str(&data).unwrap_or_default();
                        Watched::Reset(why["reason"].as_str().unwrap_or("reset").to_string())
                    }
                    _ => match serde_json::from_str::<Event>(&data) {
                        Ok(e) => Watched::Event(e),
                        Err(e) => {
                            return Err(StoreError::backend(format!(
                                "unreadable event from {}: {e}",
                                self.base
                            )));
                        }
                    },
                };
                if let Some(i) = id {
                    *last = Some(i);
                }
                if !each(item) {
                    return Ok(true);
                }
                (id, name, data) = (None, String::new(), String::new());
            }
        }
    }
}

/// A chunked body (RFC 9112 §7.1), read as one stream.
struct Chunked<R> {
    inner: R,
    left: usize,
    done: bool,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        if self.left == 0 {
            let mut size = String::new();
            // The CRLF that ends the previous chunk, then the size line.
            while size.trim().is_empty() {
                size.clear();
                if self.inner.read_line(&mut size)? == 0 {
                    self.done = true;
                    return Ok(0);
                }
            }
            let hex = size.trim().split(';').next().unwrap_or("");
            self.left = usize::from_str_radix(hex, 16).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunk size")
            })?;
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let n = buf.len().min(self.left);
        let got = self.inner.read(&mut buf[..n])?;
        self.left -= got;
        Ok(got)
    }
}

/// The bytes of a short body, chunked or not.
fn dechunk(body: &[u8], chunked: bool) -> Vec<u8> {
    if !chunked {
        return body.to_vec();
    }
    let mut out = Vec::new();
    let _ = Chunked {
        inner: BufReader::new(body),
        left: 0,
        done: false,
    }
    .read_to_end(&mut out);
    out
}
