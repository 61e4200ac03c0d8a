//! The device's UDP socket, watched by the IO driver for reads only.
//!
//! `tokio::net::UdpSocket` registers for writability too (edge-triggered):
//! each time the peer consumed one of our datagrams the freed send buffer
//! raised EPOLLOUT and woke the device loop for nothing, about once per
//! block of a Block2 download, while the file server was preparing the next
//! answer. UDP sends do not wait for the peer, so this socket sends directly
//! and waits briefly only in the rare case that the send buffer is full.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// How long to wait before retrying a send that found the buffer full.
const SEND_RETRY: Duration = Duration::from_millis(1);

/// A non-blocking UDP socket registered for [`Interest::READABLE`] only.
#[derive(Debug)]
pub(crate) struct DeviceSocket {
    fd: AsyncFd<std::net::UdpSocket>,
}

impl DeviceSocket {
    /// Takes over `socket` (made non-blocking here); needs a tokio runtime
    /// with IO enabled.
    pub(crate) fn new(socket: std::net::UdpSocket) -> io::Result<DeviceSocket> {
        socket.set_nonblocking(true)?;
        // SAFETY: the AsyncFd owns the socket, whose descriptor stays open
        // and the same until the AsyncFd (and with it the socket) is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(DeviceSocket { fd })
    }

    /// Receives one datagram (cancel-safe: nothing is read until it returns).
    pub(crate) async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        loop {
            let mut ready = self.fd.readable().await?;
            match ready.try_io(|fd| fd.get_ref().recv_from(buf)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Sends one datagram.
    pub(crate) async fn send_to(&self, bytes: &[u8], to: SocketAddr) -> io::Result<usize> {
        loop {
            match self.fd.get_ref().send_to(bytes, to) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    tokio::time::sleep(SEND_RETRY).await;
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sends_and_receives() {
        let a = DeviceSocket::new(std::net::UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let a_addr = a.fd.get_ref().local_addr().unwrap();
        let b_addr = b.local_addr().unwrap();
        a.send_to(b"ping", b_addr).await.unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = b.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"ping"[..], a_addr));
        b.send_to(b"pong", a_addr).unwrap();
        b.send_to(b"again", a_addr).unwrap();
        let (n, from) = a.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (&b"pong"[..], b_addr));
        // A second datagram already queued is read without a new wake-up.
        let (n, _) = a.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"again");
    }
}
