//! A private network namespace per test: the examples hard-code 127.0.0.1:3306, :6379 and
//! :8600, and the Lua must stay unchanged, so each test gets a loopback of its own where those
//! ports are always free and no system service can answer in their place.

use std::future::Future;
use std::time::Duration;

/// Runs `test` on a new thread that first moves into a new network namespace with its
/// loopback up. Its tokio runtime, the edge's workers and the servers it spawns all inherit
/// that namespace (namespaces belong to threads and are inherited by the threads and
/// processes they create). Without root it says why it skipped, unless `CI` is set.
pub fn in_private_network<F, Fut>(name: &str, test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} needs root (a private network namespace) and CI runs as root"
        );
        // Straight to the stderr handle: libtest captures eprintln! of passing tests.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {name}: not root, so no private network namespace for the examples' \
             fixed ports (127.0.0.1:3306, :6379, :8600)"
        );
        return;
    }
    let thread = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            enter_private_network().expect("unshare(CLONE_NEWNET) and bring lo up");
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a tokio runtime");
            rt.block_on(test());
            rt.shutdown_timeout(Duration::from_secs(5));
        })
        .expect("spawn the test thread");
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// Moves this thread into a new network namespace and brings its loopback up (it starts down).
fn enter_private_network() -> std::io::Result<()> {
    // SAFETY: plain syscalls on values we own; the ifreq is zeroed and its name NUL-terminated.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNET) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let mut result = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req);
        if result == 0 {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            result = libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
        }
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if result != 0 {
            return Err(err);
        }
    }
    Ok(())
}
