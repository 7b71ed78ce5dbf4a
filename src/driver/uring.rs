//! io_uring driver (placeholder while the loop is written).
use std::io;
use std::os::fd::BorrowedFd;

use super::Control;
use crate::http::Handler;
use crate::server::Config;

pub(crate) struct Ring;

pub(crate) fn setup(_config: &Config) -> io::Result<Ring> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}

pub(crate) fn is_refusal(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM | libc::ENOSYS | libc::EINVAL | libc::ENOMEM | libc::EOPNOTSUPP))
}

impl Ring {
    pub(crate) fn describe(&self) -> String {
        String::new()
    }
    pub(crate) fn run<H: Handler>(self, _config: &Config, _listener: BorrowedFd<'_>, _handler: &mut H, _ctl: &Control) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "uring driver not built yet"))
    }
}
