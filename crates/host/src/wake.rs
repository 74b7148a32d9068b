//! Waking waiters across processes: each waiting request binds an abstract
//! Unix datagram socket named after the store and a random id; a releaser
//! sends one byte to the addresses of the requests it may have unblocked.
//! Abstract sockets vanish with their process, so nothing is left on disk.
//! A lost or impossible wake-up (another network namespace) costs only
//! latency: waiters re-check on a timer.
//!
//! Holders are told the same way when someone else ends one of their locks
//! (forced, stolen, swept): each holding process listens at one address
//! made from its pid and start time ([`holder_address`]), which the store
//! can name from the holder it recorded. Being told is a hint, too: the
//! holder asks the store at once instead of at its next renewal, and only
//! the store's answer counts.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use locksmith_core::StoreError;
use locksmith_core::WakeSource;

/// The receiving end of one waiting request.
pub struct WakeSocket {
    socket: UnixDatagram,
    address: String,
    /// Watches the life files of process-bound holders in the way: their
    /// death closes the file, which inotify reports at once.
    deaths: Option<rustix::fd::OwnedFd>,
    watched: Vec<String>,
    /// A watched holder was already dead when the watch began.
    pending: bool,
    /// The last message a wake-up carried (see [`locksmith_core::local::wake_with`]).
    message: Option<String>,
}

impl WakeSocket {
    /// Binds a fresh address for a waiter of store `store_id`.
    pub fn bind(store_id: &str) -> Result<WakeSocket, StoreError> {
        let address = format!("locksmith/{store_id}/{}", crate::random_hex(12));
        let addr = SocketAddr::from_abstract_name(address.as_bytes())
            .map_err(|e| StoreError::backend_from("cannot name a wake socket", e))?;
        let socket = UnixDatagram::bind_addr(&addr)
            .map_err(|e| StoreError::backend_from(format!("cannot bind a wake socket: {e}"), e))?;
        Ok(WakeSocket {
            socket,
            address,
            deaths: None,
            watched: Vec::new(),
            pending: false,
            message: None,
        })
    }
}

impl WakeSource for WakeSocket {
    fn address(&self) -> &str {
        &self.address
    }

    fn wait(&mut self, timeout: Duration) -> bool {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        if std::mem::take(&mut self.pending) {
            return true;
        }
        let ts = Timespec {
            tv_sec: timeout.as_secs() as i64,
            tv_nsec: timeout.subsec_nanos() as _,
        };
        let mut fds = vec![PollFd::new(&self.socket, PollFlags::IN)];
        if let Some(d) = &self.deaths {
            fds.push(PollFd::new(d, PollFlags::IN));
        }
        if poll(&mut fds, Some(&ts)).unwrap_or(0) == 0 {
            return false;
        }
        let death = fds.get(1).is_some_and(|f| !f.revents().is_empty());
        drop(fds);
        // Collapse a burst of wake-ups into one attempt, keeping the last
        // message one carried.
        let mut buf = [0u8; 512];
        let _ = self.socket.set_nonblocking(true);
        while let Ok(n) = self.socket.recv(&mut buf) {
            if n > 1 {
                self.message = Some(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        if death && let Some(d) = &self.deaths {
            while rustix::io::read(d, &mut buf).is_ok_and(|n| n > 0) {}
        }
        true
    }

    fn message(&mut self) -> Option<String> {
        self.message.take()
    }

    fn watch(&mut self, targets: &[String]) {
        use rustix::fs::inotify::{self, CreateFlags, WatchFlags};
        for t in targets {
            if self.watched.contains(t) {
                continue;
            }
            if self.deaths.is_none() {
                self.deaths = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK).ok();
            }
            if let Some(d) = &self.deaths {
                // The holder opened its life file for writing and never closes
                // it while alive: a close-after-write is its death (or exit).
                let _ = inotify::add_watch(
                    d,
                    t.as_str(),
                    WatchFlags::CLOSE_WRITE | WatchFlags::DELETE_SELF,
                );
            }
            // It may have died between the attempt and the watch.
            if crate::life::proves_death(t) {
                self.pending = true;
            }
            self.watched.push(t.clone());
        }
    }
}

impl Drop for WakeSocket {
    fn drop(&mut self) {
        // Closing an inotify instance waits for the kernel to retire its
        // watches, which can take milliseconds: hand it to a closer thread
        // so that the caller, who may just have been granted a lock, goes on.
        if let Some(fd) = self.deaths.take() {
            close_later(fd);
        }
    }
}

/// Closes descriptors on a background thread, started on first use.
fn close_later(fd: rustix::fd::OwnedFd) {
    use std::sync::mpsc::{Sender, channel};
    use std::sync::{Mutex, OnceLock};
    static CLOSER: OnceLock<Mutex<Sender<rustix::fd::OwnedFd>>> = OnceLock::new();
    let sender = CLOSER.get_or_init(|| {
        let (tx, rx) = channel::<rustix::fd::OwnedFd>();
        // Should the thread not start, the receiver is dropped with it, every
        // send fails, and the descriptor is closed inline below.
        let _ = std::thread::Builder::new()
            .name("locksmith-close".into())
            .spawn(move || rx.into_iter().for_each(drop));
        Mutex::new(tx)
    });
    let sender = sender.lock().unwrap_or_else(|p| p.into_inner());
    if let Err(back) = sender.send(fd) {
        drop(back.0);
    }
}

/// Where the process `pid` (started at `start`) listens to be told that
/// the store `store_id` ended one of its locks.
pub fn holder_address(store_id: &str, pid: u32, start: Option<u64>) -> String {
    format!("locksmith/{store_id}/held/{pid}.{}", start.unwrap_or(0))
}

/// The holder address of this process for the store `store_id`.
pub fn own_holder_address(store_id: &str) -> String {
    let me = crate::this_process(String::new());
    holder_address(store_id, me.pid, me.pid_start)
}

/// The shortest interval between two calls of an inbox's `told`.
const TOLD_EVERY: Duration = Duration::from_millis(20);

/// Reads whatever is queued on `socket` without waiting.
fn drain(socket: &UnixDatagram, buf: &mut [u8]) {
    if socket.set_nonblocking(true).is_ok() {
        while socket.recv(buf).is_ok() {}
        let _ = socket.set_nonblocking(false);
    }
}

/// A holder address being listened at: a thread calls `told` for every
/// datagram, until the inbox is dropped.
pub struct Inbox {
    address: String,
    closing: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The process that listens: a child forked with the inbox has no
    /// such thread and must not touch the socket it shares with its parent.
    pid: u32,
}

impl Inbox {
    /// Binds `address` and starts the listening thread. Fails when the
    /// address is taken (another listener of this process, or a process
    /// that squats it): the holder then learns at its next renewal.
    pub fn listen(address: &str, told: impl Fn() + Send + 'static) -> std::io::Result<Inbox> {
        let addr = SocketAddr::from_abstract_name(address.as_bytes())?;
        let socket = UnixDatagram::bind_addr(&addr)?;
        // Wakes now and then to see the flag, should the last datagram of
        // `drop` not arrive.
        socket.set_read_timeout(Some(Duration::from_secs(1)))?;
        let closing = Arc::new(AtomicBool::new(false));
        let c = closing.clone();
        let thread = std::thread::Builder::new()
            .name("locksmith-told".into())
            .spawn(move || {
                let mut buf = [0u8; 64];
                let mut last: Option<std::time::Instant> = None;
                loop {
                    let got = socket.recv(&mut buf);
                    if c.load(Ordering::Acquire) {
                        return;
                    }
                    match got {
                        // Any datagram, even an empty one, is a hint; the
                        // socket is never shut down (a forked child shares it).
                        Ok(_) => {
                            // At most one call per interval: a burst, or a
                            // flood from anyone on the machine, becomes one
                            // round of renewals.
                            if let Some(wait) = last
                                .map(|l| TOLD_EVERY.saturating_sub(l.elapsed()))
                                .filter(|w| !w.is_zero())
                            {
                                std::thread::sleep(wait);
                            }
                            drain(&socket, &mut buf);
                            if c.load(Ordering::Acquire) {
                                return;
                            }
                            last = Some(std::time::Instant::now());
                            told();
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::Interrupted
                                    | std::io::ErrorKind::WouldBlock
                                    | std::io::ErrorKind::TimedOut
                            ) => {}
                        // Not expected of a bound datagram socket; pause
                        // rather than spin, and go on listening.
                        Err(_) => std::thread::sleep(TOLD_EVERY),
                    }
                }
            })?;
        Ok(Inbox {
            address: address.to_string(),
            closing,
            thread: Some(thread),
            pid: std::process::id(),
        })
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        if std::process::id() != self.pid {
            // A forked child: the thread is its parent's.
            std::mem::forget(self.thread.take());
            return;
        }
        // The thread wakes on this last datagram, sees the flag and ends,
        // closing the socket; the address is free once it has.
        self.closing.store(true, Ordering::Release);
        Waker::new().wake(&self.address);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The sending end, one per store handle.
pub struct Waker {
    socket: Option<UnixDatagram>,
    /// Connected (never sent on) to test whether an address is bound.
    prober: Option<UnixDatagram>,
}

impl Default for Waker {
    fn default() -> Self {
        Waker::new()
    }
}

impl Waker {
    /// A waker with its own unbound sending and probing sockets.
    pub fn new() -> Waker {
        Waker {
            socket: UnixDatagram::unbound().ok(),
            prober: UnixDatagram::unbound().ok(),
        }
    }

    /// True when some process has `address` bound: its waiter is alive.
    /// Connecting a datagram socket sends nothing.
    pub fn bound(&self, address: &str) -> bool {
        match (
            &self.prober,
            SocketAddr::from_abstract_name(address.as_bytes()),
        ) {
            (Some(p), Ok(addr)) => p.connect_addr(&addr).is_ok(),
            _ => false,
        }
    }

    /// Best effort: a waiter that is gone simply is not told. An entry of
    /// a wake list that carries a message ([`locksmith_core::local::wake_with`])
    /// sends the message.
    pub fn wake(&self, wake: &str) {
        let (address, message) = locksmith_core::local::split_wake(wake);
        if let (Some(s), Ok(addr)) = (
            &self.socket,
            SocketAddr::from_abstract_name(address.as_bytes()),
        ) {
            let _ = s.set_nonblocking(true);
            let _ = s.send_to_addr(message.map_or(&b"w"[..], str::as_bytes), &addr);
        }
    }
}
