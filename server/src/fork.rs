//! Point-in-time images in a child process, as Redis does: the shard thread forks, the
//! child (a copy-on-write view of memory, frozen at the fork) writes its file and exits,
//! the shard keeps serving. Only the forking shard's own data is read in the child: other
//! shards' threads may have been mid-update when the fork happened.
//!
//! The child does nothing but plain file I/O and allocation (jemalloc is fork-safe through
//! its atfork handlers); it logs nothing (another thread may hold the log's lock), closes
//! every inherited descriptor first (listening sockets must not outlive the server), and dies
//! with the server (PR_SET_PDEATHSIG).

use std::time::Instant;

use std::sync::atomic::{AtomicU64, Ordering};

/// Forks so far and how long the last one took (INFO stats).
pub static TOTAL_FORKS: AtomicU64 = AtomicU64::new(0);
pub static LATEST_FORK_USEC: AtomicU64 = AtomicU64::new(0);

/// A running child.
#[derive(Debug)]
pub struct Child {
    pub pid: libc::pid_t,
    pub started: Instant,
}

/// How a child ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    Running,
    Ok,
    Failed(String),
}

/// Forks; the child runs `work` and exits with 0 when it returns Ok, else 1.
pub fn spawn(work: impl FnOnce() -> std::io::Result<()>) -> std::io::Result<Child> {
    let parent = unsafe { libc::getpid() };
    let t0 = Instant::now();
    // SAFETY: the child only runs `work` (file I/O and allocation, no locks shared with
    // other threads) and then _exit; it never returns into the executor.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        }
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
            .map(|r| r.is_ok())
            .unwrap_or(false);
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    LATEST_FORK_USEC.store(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
    TOTAL_FORKS.fetch_add(1, Ordering::Relaxed);
    Ok(Child {
        pid,
        started: Instant::now(),
    })
}

impl Child {
    /// Whether the child has ended, and how (never blocks).
    pub fn poll(&self) -> Exit {
        let mut status = 0;
        // SAFETY: waitpid on our own child with WNOHANG.
        let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
        if r == 0 {
            return Exit::Running;
        }
        if r < 0 {
            return Exit::Failed(format!("waitpid: {}", std::io::Error::last_os_error()));
        }
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
            Exit::Ok
        } else if libc::WIFSIGNALED(status) {
            Exit::Failed(format!("child killed by signal {}", libc::WTERMSIG(status)))
        } else {
            Exit::Failed(format!(
                "child exited with status {}",
                libc::WEXITSTATUS(status)
            ))
        }
    }

    /// Stops the child and reaps it.
    pub fn kill(self) {
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            let mut status = 0;
            libc::waitpid(self.pid, &mut status, 0);
        }
    }
}
