//! The UDP socket QUIC runs on, with receive and send buffers sized for
//! fan-out. One socket carries every connection: when an event goes to
//! thousands of clients at once, their acknowledgements arrive together,
//! and a datagram that finds the receive buffer full is dropped by the
//! kernel (`RcvbufErrors` in `/proc/net/snmp`). QUIC then treats it as
//! loss: the peer resends and shrinks its window, and on a link that
//! already loses packets the streams fall behind for good.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};

/// The sizes the kernel granted, as it reports them (Linux counts its own
/// bookkeeping: twice what was asked, capped at twice
/// `net.core.rmem_max` / `wmem_max` unless the process may exceed them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granted {
    /// `SO_RCVBUF`.
    pub recv: usize,
    /// `SO_SNDBUF`.
    pub send: usize,
}

/// Binds `addr` with receive and send buffers of `recv` and `send` bytes
/// (0: the kernel's default).
pub fn bind(
    addr: SocketAddr,
    recv: usize,
    send: usize,
) -> io::Result<(std::net::UdpSocket, Granted)> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    ask(&socket, Dir::Recv, recv);
    ask(&socket, Dir::Send, send);
    socket.bind(&addr.into())?;
    let granted = Granted {
        recv: socket.recv_buffer_size()?,
        send: socket.send_buffer_size()?,
    };
    Ok((socket.into(), granted))
}

#[derive(Clone, Copy)]
enum Dir {
    Recv,
    Send,
}

/// Asks for `bytes`: beyond the sysctl cap when the process may
/// (`SO_RCVBUFFORCE`/`SO_SNDBUFFORCE` need `CAP_NET_ADMIN`), else up to it.
/// A refusal is not an error: the socket keeps what it got, and the caller
/// reports the granted size.
fn ask(socket: &Socket, dir: Dir, bytes: usize) {
    if bytes == 0 {
        return;
    }
    let forced = match dir {
        Dir::Recv => libc::SO_RCVBUFFORCE,
        Dir::Send => libc::SO_SNDBUFFORCE,
    };
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: a valid socket descriptor, a c_int option value and its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            forced,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        return;
    }
    let _ = match dir {
        Dir::Recv => socket.set_recv_buffer_size(bytes),
        Dir::Send => socket.set_send_buffer_size(bytes),
    };
}

/// Whether `granted` (as the kernel reports it) holds `asked` bytes.
pub fn holds(granted: usize, asked: usize) -> bool {
    asked == 0 || granted >= asked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_grows_when_asked_as_far_as_it_may() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (_, default) = bind(any, 0, 0).unwrap();
        let asked = default.recv * 2;
        let (_, bigger) = bind(any, asked, 0).unwrap();
        let cap: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(bigger.recv >= default.recv, "{default:?} → {bigger:?}");
        if bigger.recv == default.recv {
            // Only a process without CAP_NET_ADMIN, under a sysctl cap at
            // the default, may get no more.
            assert!(
                cap * 2 <= default.recv,
                "{default:?} → {bigger:?} (rmem_max {cap})"
            );
        }
    }
}
