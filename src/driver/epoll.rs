//! epoll driver (placeholder while the loop is written).
use std::io;
use std::os::fd::BorrowedFd;

use super::Control;
use crate::http::Handler;
use crate::server::Config;

pub(crate) fn run<H: Handler>(_config: &Config, _listener: BorrowedFd<'_>, _handler: &mut H, _ctl: &Control) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "epoll driver not built yet"))
}
