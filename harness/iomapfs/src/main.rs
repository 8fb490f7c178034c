//! `iomapfs SOURCE MOUNTPOINT [-o options]`: serve an ext4 filesystem through FUSE.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;

use iomapfs::helper::Invocation;
use iomapfs::options::{IomapPolicy, MountOptions, HELP};
use iomapfs::server::Server;
use iomapfs::transport::{probe_iomap_support, DevFuse, KernelSocket, Transport};
use iomapfs::{mount, session};

#[derive(Parser)]
#[command(
    name = "iomapfs",
    version,
    about = "Serve an ext4 filesystem (image file or block device) through FUSE, with FUSE iomap when the kernel offers it.",
    after_help = HELP
)]
struct Cli {
    /// ext4 image file or block device.
    source: PathBuf,
    /// Directory to mount on (not used with --kernel-socket or --vhost-user-socket).
    #[arg(required_unless_present_any = ["kernel_socket", "vhost_user_socket"])]
    mountpoint: Option<PathBuf>,
    /// Mount options, comma separated (repeatable).
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<String>,
    /// Stay in the foreground instead of daemonizing once the mount is live.
    #[arg(short = 'f', long)]
    foreground: bool,
    /// Do not mount: create a SOCK_SEQPACKET socket at PATH, accept one peer and serve
    /// it as if it were the kernel (one request per packet, one reply per packet).
    #[arg(long, value_name = "PATH", conflicts_with = "mountpoint")]
    kernel_socket: Option<PathBuf>,
    /// Do not mount: be the vhost-user backend of QEMU's vhost-user-fs device (virtio-fs)
    /// on the socket PATH; the guest mounts `-t virtiofs TAG`. Serves one QEMU until it
    /// disconnects, in the foreground; `threads=N` request queues (classic FUSE only).
    #[arg(
        long,
        value_name = "PATH",
        conflicts_with_all = ["mountpoint", "kernel_socket"]
    )]
    vhost_user_socket: Option<PathBuf>,
}

fn main() {
    // Installed as /sbin/mount.fuse.SUBTYPE or /sbin/mount.fuseblk.SUBTYPE (a link to this
    // binary), mount(8) runs us with its helper calling convention.
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let as_helper = matches!(
        iomapfs::helper::invocation(&argv0),
        Ok(Invocation::Helper { .. })
    );
    let cli = match iomapfs::helper::invocation(&argv0) {
        Ok(Invocation::Server) => Cli::parse(),
        Ok(Invocation::Helper { name, preset }) => {
            match iomapfs::helper::translate(preset.as_deref(), std::env::args().skip(1)) {
                Ok(args) => Cli::parse_from(args),
                Err(e) => {
                    eprintln!("{name}: {e}");
                    std::process::exit(1);
                }
            }
        }
        Err(e) => {
            eprintln!("iomapfs: {e}");
            std::process::exit(1);
        }
    };
    let opts = match MountOptions::parse(cli.options.iter().map(String::as_str)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("iomapfs: {e}");
            std::process::exit(2);
        }
    };
    init_logging(&opts, as_helper);
    if let Some(fault) = opts.fault {
        tracing::warn!("FAULT INJECTION ACTIVE ({fault:?}): this server misbehaves on purpose");
    }
    if let Err(e) = run(&cli, opts) {
        eprintln!("iomapfs: {e:#}");
        std::process::exit(1);
    }
}

/// As a mount helper the server is quiet like other mount helpers: what it prints
/// before daemonizing lands in the caller's output (fstests compares that output).
fn init_logging(opts: &MountOptions, as_helper: bool) {
    let default = if opts.debug {
        "iomapfs=debug"
    } else if as_helper && opts.log.is_none() {
        "iomapfs=warn"
    } else {
        "iomapfs=info"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// `e2fsck -p`: quick on a clean filesystem, and the automatic repairs of an unclean one
/// (this server writes metadata without a journal, like ext2). Exit codes 0-2 mean the
/// filesystem is usable now.
fn preen(source: &std::path::Path) -> Result<()> {
    // mount(8) runs helpers with a PATH that may lack the sbin directories.
    let e2fsck = ["/usr/sbin/e2fsck", "/sbin/e2fsck"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("e2fsck");
    let out = std::process::Command::new(e2fsck)
        .arg("-p")
        .arg(source)
        .output()
        .context("cannot run e2fsck for -o preen (apt-get install e2fsprogs)")?;
    match out.status.code() {
        Some(0) => Ok(()),
        Some(1 | 2) => {
            // Info, not a warning: a mount helper's stderr is the caller's output.
            tracing::info!(
                "e2fsck -p repaired {}: {}",
                source.display(),
                String::from_utf8_lossy(&out.stdout).trim()
            );
            Ok(())
        }
        _ => anyhow::bail!(
            "e2fsck -p {} could not repair it ({}): {}{}; run `e2fsck -f` by hand",
            source.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}

fn run(cli: &Cli, opts: MountOptions) -> Result<()> {
    // Held until the process exits (after the final flush), also by the daemonized child.
    let _lock = iomapfs::lock::lock_source(&cli.source, Duration::from_secs(opts.lock_timeout))?;
    if opts.preen && !opts.read_only {
        preen(&cli.source)?;
    }
    if let Some(path) = &cli.vhost_user_socket {
        return serve_virtiofs(&cli.source, path, opts);
    }
    let fs = ext2fs::Fs::open(&cli.source, !opts.read_only).with_context(|| {
        format!(
            "cannot open the ext4 filesystem on {}",
            cli.source.display()
        )
    })?;
    let block_size = fs.block_size();
    let data = std::fs::OpenOptions::new()
        .read(true)
        .write(!opts.read_only)
        .open(&cli.source)
        .with_context(|| format!("cannot open {} for data I/O", cli.source.display()))?;
    let threads = opts.threads;

    if let Some(path) = &cli.kernel_socket {
        let server = Arc::new(Server::new(fs, data, opts));
        eprintln!("iomapfs: waiting for a peer on {}", path.display());
        let transport: Arc<dyn Transport> = Arc::new(
            KernelSocket::accept_one(path)
                .with_context(|| format!("cannot serve the socket {}", path.display()))?,
        );
        server.attach(transport.clone(), true);
        first_request(&server, transport.as_ref())?;
        stop_on_signals(server.clone(), transport.clone(), None)?;
        return session::serve(server, transport, threads);
    }

    let mountpoint = cli.mountpoint.as_ref().context("a mount point is needed")?;
    // iomap needs a block device, whichever mount type shows it.
    let is_blockdev = mount::Flavor::of(&cli.source)? == mount::Flavor::Fuseblk;
    let log = opts.log.clone();
    let mounted = mount::mount(&cli.source, mountpoint, block_size, &opts)?;
    match probe_iomap_support(&mounted.dev_fuse) {
        Some(flags) => tracing::info!("kernel FUSE iomap support flags: {flags:#x}"),
        None => {
            tracing::debug!("kernel has no FUSE iomap support (FUSE_DEV_IOC_IOMAP_SUPPORT unknown)")
        }
    }
    let server = Arc::new(Server::new(fs, data, opts));
    let transport: Arc<dyn Transport> = Arc::new(DevFuse::new(mounted.dev_fuse));
    server.attach(transport.clone(), is_blockdev);

    // Answer INIT before going to the background, so a refused mount is reported here.
    if let Err(e) = first_request(&server, transport.as_ref()) {
        mount::detach(&mounted.mountpoint);
        return Err(e);
    }
    tracing::info!(
        "serving {} on {} as {} ({} mode)",
        cli.source.display(),
        mounted.mountpoint.display(),
        mounted.fstype,
        server.mode().name()
    );
    if !cli.foreground {
        daemonize(log.as_deref())?;
    }
    // After the fork: threads do not survive it.
    stop_on_signals(
        server.clone(),
        transport.clone(),
        Some(mounted.mountpoint.clone()),
    )?;
    session::serve(server, transport, threads)
}

/// The filesystem and the data fd on `source` (for each virtio-fs session).
fn open_source(source: &std::path::Path, read_only: bool) -> Result<(ext2fs::Fs, std::fs::File)> {
    let fs = ext2fs::Fs::open(source, !read_only)
        .with_context(|| format!("cannot open the ext4 filesystem on {}", source.display()))?;
    let data = std::fs::OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(source)
        .with_context(|| format!("cannot open {} for data I/O", source.display()))?;
    Ok((fs, data))
}

/// `--vhost-user-socket`: virtio-fs for a QEMU guest. The filesystem is opened now and
/// again for each mount after a DESTROY; the flock and the preen are once per process.
fn serve_virtiofs(
    source: &std::path::Path,
    socket: &std::path::Path,
    opts: MountOptions,
) -> Result<()> {
    if opts.iomap == IomapPolicy::On {
        bail!(
            "iomap=on cannot work over virtio-fs: the guest kernel does iomap I/O only on the \
             block device of a fuseblk mount; use iomap=auto or off"
        );
    }
    let threads = opts.threads;
    let source_path = source.to_path_buf();
    let open = move || {
        let (fs, data) = open_source(&source_path, opts.read_only)?;
        Ok(Server::new(fs, data, opts.clone()))
    };
    // The backend starts its queue and commit threads at once: they must inherit the mask.
    block_stop_signals()?;
    let backend = iomapfs::vhost_user::VirtioFs::new(Box::new(open), threads)?;
    let stopper = backend.stopper();
    let again = stopper.clone();
    // Before the socket exists: whoever waits for it may signal us at once.
    on_stop_signals(move || stopper.stop(), move || again.close_now().is_ok())?;
    eprintln!(
        "iomapfs: vhost-user-fs backend for {} waiting for QEMU on {}",
        source.display(),
        socket.display()
    );
    backend.serve(socket)
}

/// SIGTERM, SIGINT and SIGHUP (a shutdown, `timeout`, a closed terminal) stop the server
/// cleanly: the first runs `stop` (sync, then end the session: `stop_on_signals`), a
/// second runs `close_now` (close the filesystem) and exits at once. The signals are
/// blocked in every thread and taken by one waiting thread, so no handler runs in signal
/// context.
fn on_stop_signals(
    stop: impl Fn() + Send + 'static,
    close_now: impl Fn() -> bool + Send + 'static,
) -> Result<()> {
    // Blocked here, before the workers start, so every thread inherits the mask.
    let set = block_stop_signals()?;
    std::thread::Builder::new()
        .name("iomapfs-signals".into())
        .spawn(move || {
            let mut stopping = false;
            while let Ok(sig) = set.wait() {
                if stopping {
                    tracing::warn!("{sig} again: closing the filesystem and exiting now");
                    std::process::exit(i32::from(!close_now()));
                }
                stopping = true;
                tracing::info!("{sig}: syncing, then stopping");
                stop();
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

/// Blocks SIGTERM, SIGINT and SIGHUP in this thread (and the threads it starts after).
fn block_stop_signals() -> Result<nix::sys::signal::SigSet> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(sig);
    }
    set.thread_block()
        .context("cannot block SIGTERM/SIGINT/SIGHUP")?;
    Ok(set)
}

/// `on_stop_signals` for one server: everything is synced at once, then the filesystem is
/// unmounted (lazily if it is busy: serving goes on until the last open file is closed),
/// or the kernel socket closed, which ends the session and closes the filesystem.
fn stop_on_signals(
    server: Arc<Server>,
    transport: Arc<dyn Transport>,
    mountpoint: Option<std::path::PathBuf>,
) -> Result<()> {
    let again = server.clone();
    on_stop_signals(
        move || {
            if let Err(e) = server.sync() {
                tracing::warn!("sync on a stop signal failed: {e:?}");
            }
            match &mountpoint {
                Some(mnt) => mount::unmount_for_stop(mnt),
                None => transport.close(),
            }
        },
        move || again.shutdown().is_ok(),
    )
}

/// Reads and answers the kernel's INIT.
fn first_request(server: &Server, transport: &dyn Transport) -> Result<()> {
    let mut buf = vec![0u8; session::buffer_size()];
    let n = transport
        .receive(&mut buf)?
        .context("the kernel closed the connection before INIT")?;
    let req = fuse_wire::request::parse(&buf[..n]).map_err(|e| anyhow::anyhow!("bad INIT: {e}"))?;
    if !matches!(req.op, fuse_wire::request::Op::Init(_)) {
        bail!("expected INIT as the first request, got {:?}", req.op);
    }
    let reply = iomapfs::dispatch::handle(server, &req).expect("INIT always gets a reply");
    let refused = reply.is_err();
    iomapfs::reply::send(transport, req.header.unique, &reply)?;
    if refused {
        bail!("the mount was refused during INIT (see the log above)");
    }
    Ok(())
}

/// Forks into the background: the parent exits 0 (the mount is live), the child goes on
/// with its stdio on /dev/null (or the log file for stderr).
fn daemonize(log: Option<&std::path::Path>) -> Result<()> {
    use nix::unistd::{fork, setsid, ForkResult};
    // SAFETY: no other threads exist yet; the child only continues this program.
    match unsafe { fork() }.context("fork failed")? {
        ForkResult::Parent { .. } => std::process::exit(0),
        ForkResult::Child => {}
    }
    setsid().context("setsid failed")?;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    let err = match log {
        Some(path) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?,
        None => null.try_clone()?,
    };
    use nix::unistd::{dup2_stderr, dup2_stdin, dup2_stdout};
    dup2_stdin(&null).context("dup2 onto stdin failed")?;
    dup2_stdout(&null).context("dup2 onto stdout failed")?;
    dup2_stderr(&err).context("dup2 onto stderr failed")?;
    Ok(())
}
