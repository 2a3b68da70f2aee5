//! Ports for servers a test or task starts itself.

use std::io;
use std::net::TcpListener;

/// A port nobody listens on right now.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
