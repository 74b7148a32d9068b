//! Waking waiters across processes: each waiting request binds an abstract
//! Unix datagram socket named after the store and a random id; a releaser
//! sends one byte to the addresses of the requests it may have unblocked.
//! Abstract sockets vanish with their process, so nothing is left on disk.
//! A lost or impossible wake-up (another network namespace) costs only
//! latency: waiters re-check on a timer.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use locksmith_core::StoreError;
use locksmith_core::store::WakeSource;

/// The receiving end of one waiting request.
pub struct WakeSocket {
    socket: UnixDatagram,
    address: String,
}

impl WakeSocket {
    /// Binds a fresh address for a waiter of store `store_id`.
    pub fn bind(store_id: &str) -> Result<WakeSocket, StoreError> {
        let mut b = [0u8; 12];
        getrandom::fill(&mut b).map_err(|e| StoreError::Backend(format!("random source: {e}")))?;
        let id: String = b.iter().map(|x| format!("{x:02x}")).collect();
        let address = format!("locksmith/{store_id}/{id}");
        let addr = SocketAddr::from_abstract_name(address.as_bytes())
            .map_err(|e| StoreError::Backend(format!("wake socket address: {e}")))?;
        let socket = UnixDatagram::bind_addr(&addr)
            .map_err(|e| StoreError::Backend(format!("cannot bind a wake socket: {e}")))?;
        Ok(WakeSocket { socket, address })
    }
}

impl WakeSource for WakeSocket {
    fn address(&self) -> &str {
        &self.address
    }

    fn wait(&mut self, timeout: Duration) -> bool {
        let timeout = timeout.max(Duration::from_micros(1));
        if self.socket.set_read_timeout(Some(timeout)).is_err() {
            std::thread::sleep(timeout);
            return false;
        }
        let mut buf = [0u8; 8];
        let woken = self.socket.recv(&mut buf).is_ok();
        if woken {
            // Collapse a burst of wake-ups into one attempt.
            let _ = self.socket.set_nonblocking(true);
            while self.socket.recv(&mut buf).is_ok() {}
            let _ = self.socket.set_nonblocking(false);
        }
        woken
    }
}

/// The sending end, one per store handle.
pub(crate) struct Waker {
    socket: Option<UnixDatagram>,
}

impl Waker {
    pub fn new() -> Waker {
        Waker {
            socket: UnixDatagram::unbound().ok(),
        }
    }

    /// Best effort: a waiter that is gone simply is not told.
    pub fn wake(&self, address: &str) {
        if let (Some(s), Ok(addr)) = (&self.socket, SocketAddr::from_abstract_name(address.as_bytes())) {
            let _ = s.set_nonblocking(true);
            let _ = s.send_to_addr(b"w", &addr);
        }
    }
}
