//! Shared mappings: one `MAP_SHARED` mapping made before `fork()`, so that the
//! parent and every child address the same physical pages; and [`Layout`],
//! which places aligned regions in one.
//!
//! The mapping is a memfd sealed against shrinking and growing: a worker
//! cannot truncate it under the master (which would turn the master's next
//! access into `SIGBUS`), and the descriptor can be handed to a worker that
//! re-executes the binary ([`Shm::from_fd`]). Where memfds are unavailable,
//! an anonymous shared mapping serves plain-fork workers just as well.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use nix::sys::mman::{madvise, MmapAdvise};

/// The system page size in bytes.
pub fn page_size() -> usize {
    // SAFETY: `sysconf` has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

/// A read-write `MAP_SHARED` mapping, page-aligned, zero-filled when made,
/// unmapped on drop.
///
/// Its bytes are shared with every process forked after it was made (and
/// every process that maps its memfd): they are only ever accessed through
/// the atomics and protocols of the types placed in it.
pub struct Shm {
    /// Start of the mapping (page-aligned).
    ptr: NonNull<u8>,
    /// Length of the mapping in bytes, a multiple of the page size.
    len: usize,
    /// The memfd behind the mapping; `None` for an anonymous mapping.
    fd: Option<OwnedFd>,
}

// SAFETY: `Shm` is a pointer to memory that lives until `drop` unmaps it; it
// hands out raw pointers only, and every type that reads or writes through
// them synchronizes with atomics, so sharing or moving it between threads is
// as sound as sharing it between processes.
unsafe impl Send for Shm {}
// SAFETY: as for `Send`: `&Shm` gives access only to raw pointers.
unsafe impl Sync for Shm {}

impl Shm {
    /// Maps at least `len` bytes (rounded up to whole pages) of shared,
    /// zeroed memory: a sealed memfd if the kernel offers memfds, an
    /// anonymous shared mapping otherwise.
    pub fn new(len: usize) -> io::Result<Shm> {
        match Shm::memfd(len) {
            Ok(shm) => Ok(shm),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EINVAL | libc::EPERM)) => {
                Shm::anonymous(len)
            }
            Err(e) => Err(e),
        }
    }

    /// Maps at least `len` bytes of a new memfd, sealed so that its size can
    /// never change.
    pub fn memfd(len: usize) -> io::Result<Shm> {
        let len = round_up(len.max(1), page_size());
        let flags = MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING;
        let fd = memfd_create(c"forkring-ipc", flags).map_err(io::Error::from)?;
        nix::unistd::ftruncate(&fd, len as libc::off_t).map_err(io::Error::from)?;
        let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
        fcntl(fd.as_raw_fd(), FcntlArg::F_ADD_SEALS(seals)).map_err(io::Error::from)?;
        Shm::map(len, Some(fd))
    }

    /// Maps at least `len` bytes of anonymous shared memory (no descriptor:
    /// it reaches forked children only).
    pub fn anonymous(len: usize) -> io::Result<Shm> {
        Shm::map(round_up(len.max(1), page_size()), None)
    }

    /// Maps a memfd made by [`Shm::memfd`] in another process (a worker that
    /// re-executed the binary and inherited the descriptor). Refuses a
    /// descriptor that is not sealed against shrinking.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Shm> {
        let seals = fcntl(fd.as_raw_fd(), FcntlArg::F_GET_SEALS).map_err(io::Error::from)?;
        if seals & libc::F_SEAL_SHRINK == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "shared memory fd is not sealed against shrinking",
            ));
        }
        let len = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(io::Error::from)?.st_size as usize;
        if len == 0 || len % page_size() != 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "shared memory fd has an odd size"));
        }
        Shm::map(len, Some(fd))
    }

    fn map(len: usize, fd: Option<OwnedFd>) -> io::Result<Shm> {
        let (flags, raw) = match &fd {
            Some(fd) => (libc::MAP_SHARED, fd.as_raw_fd()),
            None => (libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1),
        };
        // SAFETY: a fresh mapping chosen by the kernel (null hint) aliases no
        // Rust object; the descriptor, if any, is open for reading and writing.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, raw, 0) };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Shm { ptr, len, fd })
    }

    /// Whether a child made by `fork()` inherits this mapping: `madvise`
    /// with `MADV_DOFORK` (`true`) or `MADV_DONTFORK` (`false`). It decides
    /// what later forks copy; this process's mapping and bytes stay as they
    /// are. A child that does not inherit the mapping must not touch the
    /// objects placed in it (it has their addresses, not their pages).
    pub fn set_inherited(&self, inherited: bool) -> io::Result<()> {
        let advice = if inherited { MmapAdvise::MADV_DOFORK } else { MmapAdvise::MADV_DONTFORK };
        // SAFETY: `ptr`/`len` are exactly this mapping; DOFORK and DONTFORK
        // change only what a later fork copies, never the mapping or its
        // contents in this process.
        unsafe { madvise(self.ptr.cast(), self.len, advice) }.map_err(io::Error::from)
    }

    /// Length in bytes (whole pages).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a mapping has at least one page.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Start of the mapping.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The memfd behind the mapping, to pass to a re-executed worker
    /// (clear its close-on-exec flag first); `None` for an anonymous mapping.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(|fd| fd.as_fd())
    }

    /// Start of `region`, checked to lie inside the mapping.
    pub fn region(&self, region: Region) -> io::Result<NonNull<u8>> {
        match region.offset.checked_add(region.len) {
            Some(end) if end <= self.len => {
                // SAFETY: `offset <= end <= len`, so the result stays inside
                // (or one past the end of) this mapping.
                let p = unsafe { self.ptr.as_ptr().add(region.offset) };
                NonNull::new(p).ok_or_else(|| io::Error::other("null region"))
            }
            _ => Err(io::Error::new(io::ErrorKind::InvalidInput, "region lies outside the shared mapping")),
        }
    }
}

impl Drop for Shm {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what `mmap` returned; every object
        // placed in the mapping is reached through an `Arc<Shm>`, so nothing
        // in this process uses the mapping any more.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

impl fmt::Debug for Shm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shm")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .field("fd", &self.fd.as_ref().map(|fd| fd.as_raw_fd()))
            .finish()
    }
}

/// A byte range of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// Offset from the start of the mapping.
    pub offset: usize,
    /// Length in bytes.
    pub len: usize,
}

/// Places regions one after another, each at its own alignment.
///
/// ```
/// use forkring::internals::ipc::Layout;
/// let mut layout = Layout::new();
/// let a = layout.push(100, 128);
/// let b = layout.push(8, 128);
/// assert_eq!((a.offset, b.offset), (0, 128));
/// assert_eq!(layout.size() % forkring::internals::ipc::page_size(), 0);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Layout {
    /// First byte after the last region pushed.
    end: usize,
}

impl Layout {
    /// An empty layout.
    pub const fn new() -> Layout {
        Layout { end: 0 }
    }

    /// Reserves `len` bytes aligned to `align` (a power of two).
    pub fn push(&mut self, len: usize, align: usize) -> Region {
        assert!(align.is_power_of_two(), "alignment must be a power of two");
        let offset = round_up(self.end, align);
        self.end = offset + len;
        Region { offset, len }
    }

    /// Bytes to map for every region pushed so far, in whole pages.
    pub fn size(&self) -> usize {
        round_up(self.end.max(1), page_size())
    }
}

/// `n` rounded up to a multiple of `align` (a power of two).
pub(crate) const fn round_up(n: usize, align: usize) -> usize {
    (n + align - 1) & !(align - 1)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn layout_aligns_and_pages() {
        let mut l = Layout::new();
        assert_eq!(l.push(1, 1), Region { offset: 0, len: 1 });
        assert_eq!(l.push(10, 128), Region { offset: 128, len: 10 });
        assert_eq!(l.push(0, 64), Region { offset: 192, len: 0 });
        assert_eq!(l.size(), page_size());
        l.push(page_size(), 8);
        assert_eq!(l.size(), 2 * page_size());
    }

    #[test]
    fn mappings_are_zeroed_and_bounded() {
        for shm in [Shm::new(10).unwrap(), Shm::anonymous(5000).unwrap()] {
            assert_eq!(shm.len() % page_size(), 0);
            // SAFETY: the whole mapping is readable and nothing writes it.
            let bytes = unsafe { std::slice::from_raw_parts(shm.as_ptr(), shm.len()) };
            assert!(bytes.iter().all(|&b| b == 0));
            assert!(shm.region(Region { offset: shm.len(), len: 1 }).is_err());
            assert!(shm.region(Region { offset: 0, len: shm.len() }).is_ok());
        }
    }

    /// Whether a forked child has `shm` mapped (`madvise` on an unmapped
    /// range fails with `ENOMEM`).
    fn mapped_in_child(shm: &Shm) -> bool {
        // SAFETY: the child makes only raw system calls (madvise, _exit),
        // which are async-signal-safe, so the test harness's other threads
        // do not matter.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
        if pid == 0 {
            // SAFETY: MADV_NORMAL changes nothing; an unmapped range fails.
            let r = unsafe { libc::madvise(shm.as_ptr().cast(), shm.len(), libc::MADV_NORMAL) };
            // SAFETY: leaves the child at once.
            unsafe { libc::_exit(if r == 0 { 0 } else { 1 }) };
        }
        match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap() {
            nix::sys::wait::WaitStatus::Exited(_, code) => code == 0,
            other => panic!("child: {other:?}"),
        }
    }

    #[test]
    fn inheritance_across_fork_is_chosen() {
        for shm in [Shm::memfd(4096).unwrap(), Shm::anonymous(4096).unwrap()] {
            assert!(mapped_in_child(&shm), "inherited by default");
            shm.set_inherited(false).unwrap();
            assert!(!mapped_in_child(&shm), "MADV_DONTFORK keeps it out of the child");
            shm.set_inherited(true).unwrap();
            assert!(mapped_in_child(&shm), "MADV_DOFORK lets it in again");
        }
    }

    #[test]
    fn memfd_round_trips_and_is_sealed() {
        let shm = Shm::memfd(100).unwrap();
        // SAFETY: in bounds; no other user.
        unsafe { shm.as_ptr().add(7).write(42) };
        let fd = shm.fd().unwrap().try_clone_to_owned().unwrap();
        // Plain integer arguments on the test's own descriptor.
        assert!(syscall!(ftruncate(fd.as_raw_fd(), 0)).is_err(), "shrinking must be refused");
        let other = Shm::from_fd(fd).unwrap();
        assert_eq!(other.len(), shm.len());
        // SAFETY: in bounds; written above.
        assert_eq!(unsafe { other.as_ptr().add(7).read() }, 42);
    }
}
