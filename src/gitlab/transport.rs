//! The TCP transport under every direct GitLab call: ureq's own, minus system calls a sign-in
//! does not need. (The transport API is among ureq's `unversioned` ones: check it on ureq
//! upgrades.) ureq's TCP transport, per call on a pooled connection:
//!
//! - checks that the connection is still open (on taking it from the pool and on giving it
//!   back) with three system calls each: non-blocking on, a one-byte read, non-blocking off.
//!   Here: one `recv(MSG_PEEK | MSG_DONTWAIT)`.
//! - sets the socket's read and write timeouts whenever the time left to the call's deadline
//!   changed, which is at every call. Here: only when it moved by more than
//!   [`TIMEOUT_SLACK`], so that a read may end that much earlier or later than the deadline,
//!   a small part of a call's seconds.
//! - sends a request's head and its body in two writes, so that GitLab's side wakes up twice.
//!   Here: what ureq transmits is held until ureq waits for the answer, and sent in one write.
//!
//! Calls through a proxy keep ureq's transport (the proxy's `CONNECT` opens its own), and TLS
//! runs above this one, as above ureq's.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Weak};
use std::time::Duration;
use ureq::unversioned::transport::time::Duration as UreqDuration;
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, ShutdownHandle,
    Transport,
};
use ureq::Timeout;

/// How far a socket timeout may be from the time left before it is set again.
pub const TIMEOUT_SLACK: Duration = Duration::from_millis(100);

/// Most bytes held unsent (a request's head and form body are far smaller).
const MAX_UNSENT: usize = 64 * 1024;

/// Shortest connect attempt per address when a host has several.
const MIN_CONNECT_PER_ADDRESS: Duration = Duration::from_millis(10);

/// Opens plain TCP connections for ureq (see the module's text). Like ureq's, it leaves a
/// connection something earlier in the chain opened (a proxy's) as it is.
#[derive(Debug, Default)]
pub struct Tcp;

impl<In: Transport> Connector<In> for Tcp {
    type Out = Either<In, TcpLink>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        if let Some(chained) = chained {
            return Ok(Some(Either::A(chained)));
        }
        let stream = connect(&details.addrs, details.timeout.not_zero().map(|t| *t))?;
        if details.config.no_delay() {
            stream.set_nodelay(true)?;
        }
        let config = details.config;
        let buffers = LazyBuffers::new(config.input_buffer_size(), config.output_buffer_size());
        let link = TcpLink {
            stream: Arc::new(stream),
            buffers,
            unsent: Vec::new(),
            read_timeout: None,
            write_timeout: None,
        };
        (details.register_shutdown)(Arc::downgrade(&link.stream) as Weak<dyn ShutdownHandle>)?;
        Ok(Some(Either::B(link)))
    }
}

/// Connects to the first of `addrs` that answers within `budget`, shared between them as ureq
/// shares it (half to the first, a quarter to the second, …, the last getting what is left).
fn connect(addrs: &[SocketAddr], budget: Option<Duration>) -> Result<TcpStream, ureq::Error> {
    let started = std::time::Instant::now();
    let mut last: Option<ureq::Error> = None;
    for (i, addr) in addrs.iter().enumerate() {
        let attempt = match budget {
            None => TcpStream::connect(addr),
            Some(budget) => {
                let left = budget.saturating_sub(started.elapsed());
                if left.is_zero() {
                    return Err(ureq::Error::Timeout(Timeout::Connect));
                }
                let share = if i + 1 == addrs.len() { left } else { left / 2 };
                TcpStream::connect_timeout(addr, share.max(MIN_CONNECT_PER_ADDRESS))
            }
        };
        match attempt {
            Ok(stream) => return Ok(stream),
            Err(e) if timed_out(&e) => last = Some(ureq::Error::Timeout(Timeout::Connect)),
            Err(e) if concerns_the_address(&e) => last = Some(ureq::Error::Io(e)),
            Err(e) => return Err(ureq::Error::Io(e)),
        }
    }
    Err(last.unwrap_or_else(|| {
        ureq::Error::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "no address to connect to",
        ))
    }))
}

fn timed_out(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    )
}

/// A failure that the next address of the host may not have.
fn concerns_the_address(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | HostUnreachable | NetworkUnreachable | NetworkDown | AddrNotAvailable
    )
}

/// One TCP connection to GitLab (see the module's text).
pub struct TcpLink {
    /// Shared (weakly) with the handle ureq uses to shut the socket down on cancel.
    stream: Arc<TcpStream>,
    buffers: LazyBuffers,
    /// Transmitted by ureq, not yet written: sent at the next wait for input.
    unsent: Vec<u8>,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl std::fmt::Debug for TcpLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpLink")
            .field("peer", &self.stream.peer_addr().ok())
            .finish_non_exhaustive()
    }
}

/// The time left in `timeout` (as ureq's `NextTimeout::check`), or ureq's timeout error when
/// none is: `None` when the call has no deadline.
fn time_left(timeout: NextTimeout) -> Result<Option<Duration>, ureq::Error> {
    if timeout.after.is_zero() {
        return Err(ureq::Error::Timeout(timeout.reason));
    }
    Ok(match timeout.after {
        UreqDuration::NotHappening => None,
        UreqDuration::Exact(d) => Some(d),
    })
}

/// Whether a socket timeout of `current` may stay for a wait that should last `wanted`.
fn close_enough(current: Option<Duration>, wanted: Option<Duration>) -> bool {
    match (current, wanted) {
        (None, None) => true,
        (Some(current), Some(wanted)) => current.abs_diff(wanted) <= TIMEOUT_SLACK,
        _ => false,
    }
}

/// Readies `stream` for a wait limited by `timeout`: its socket timeout (`current`, changed
/// with `set`) brought within [`TIMEOUT_SLACK`] of the time left; ureq's timeout error when no
/// time is left.
fn arm(
    stream: &TcpStream,
    current: &mut Option<Duration>,
    timeout: NextTimeout,
    set: fn(&TcpStream, Option<Duration>) -> std::io::Result<()>,
) -> Result<(), ureq::Error> {
    let wanted = time_left(timeout)?;
    if !close_enough(*current, wanted) {
        set(stream, wanted)?;
        *current = wanted;
    }
    Ok(())
}

/// The error of a wait armed for `timeout`: its socket timeout running out is ureq's timeout,
/// with `timeout`'s reason.
fn wait_error(e: std::io::Error, timeout: NextTimeout) -> ureq::Error {
    if timed_out(&e) {
        ureq::Error::Timeout(timeout.reason)
    } else {
        e.into()
    }
}

impl TcpLink {
    /// Writes what ureq transmitted, in one write where the socket takes it.
    fn send_unsent(&mut self, timeout: NextTimeout) -> Result<(), ureq::Error> {
        if self.unsent.is_empty() {
            return Ok(());
        }
        let timeout = timeout.for_write();
        let set = TcpStream::set_write_timeout;
        arm(&self.stream, &mut self.write_timeout, timeout, set)?;
        let written = (&*self.stream).write_all(&self.unsent);
        self.unsent.clear();
        written.map_err(|e| wait_error(e, timeout))
    }
}

impl Transport for TcpLink {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        time_left(timeout.for_write())?;
        self.unsent
            .extend_from_slice(&self.buffers.output()[..amount]);
        // A long body goes out as it comes rather than held whole.
        if self.unsent.len() >= MAX_UNSENT {
            self.send_unsent(timeout)?;
        }
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.send_unsent(timeout)?;
        let timeout = timeout.for_read();
        let set = TcpStream::set_read_timeout;
        arm(&self.stream, &mut self.read_timeout, timeout, set)?;
        let input = self.buffers.input_append_buf();
        let amount = loop {
            match (&*self.stream).read(input) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                read => break read.map_err(|e| wait_error(e, timeout))?,
            }
        };
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        // Something left unsent means a request was cut short: the connection's state is
        // unknown, it is not reused.
        self.unsent.is_empty() && quiet_and_open(&self.stream)
    }
}

/// Whether the peer has neither closed `stream` nor sent anything unasked (a connection
/// between requests must have nothing to read): one `recv` that peeks without waiting.
fn quiet_and_open(stream: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut byte = 0u8;
    // SAFETY: `recv` writes at most one byte into `byte`, which outlives the call; the file
    // descriptor is the stream's, open while `stream` is borrowed.
    #[allow(unsafe_code)]
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            std::ptr::addr_of_mut!(byte).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    // Nothing to read yet (EAGAIN): open and quiet. 0: closed by the peer. 1: unasked bytes.
    n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    #[test]
    fn a_connection_is_open_while_quiet_and_not_once_closed_or_sent_to() {
        let (client, server) = pair();
        assert!(quiet_and_open(&client), "quiet");
        (&server).write_all(b"x").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(!quiet_and_open(&client), "unasked bytes");
        let (client, server) = pair();
        drop(server);
        std::thread::sleep(Duration::from_millis(50));
        assert!(!quiet_and_open(&client), "closed by the peer");
        // The check neither consumed nor blocked: the stream is still blocking.
        let (client, server) = pair();
        assert!(quiet_and_open(&client));
        (&server).write_all(b"answer").unwrap();
        let mut got = [0u8; 6];
        (&client).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"answer");
    }

    #[test]
    fn socket_timeouts_are_set_again_only_beyond_the_slack() {
        let ms = Duration::from_millis;
        assert!(close_enough(None, None));
        assert!(close_enough(Some(ms(5_000)), Some(ms(4_950))));
        assert!(close_enough(Some(ms(5_000)), Some(ms(5_100))));
        assert!(!close_enough(Some(ms(5_000)), Some(ms(4_899))));
        assert!(!close_enough(Some(ms(5_000)), Some(ms(5_101))));
        assert!(!close_enough(None, Some(ms(5_000))));
        assert!(!close_enough(Some(ms(5_000)), None));
    }

    #[test]
    fn connecting_to_a_closed_port_is_refused_and_to_the_next_address_works() {
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let err = connect(&[closed], Some(Duration::from_secs(2))).unwrap_err();
        assert!(
            matches!(&err, ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
            "{err:?}"
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap();
        let stream = connect(&[closed, open], Some(Duration::from_secs(2))).unwrap();
        assert_eq!(stream.peer_addr().unwrap(), open);
    }
}
