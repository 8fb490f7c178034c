//! `iomapfs SOURCE MOUNTPOINT [-o options]`: serve an ext4 filesystem through FUSE.
//! `iomapfs replay RECORDING --image IMAGE`: play a recorded session back (RECORD.md).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;

use iomapfs::helper::Invocation;
use iomapfs::options::{IomapPolicy, MountOptions, HELP};
use iomapfs::record::{Recorder, Recording, SessionInfo};
use iomapfs::server::Server;
use iomapfs::transport::{probe_iomap_support, DevFuse, KernelSocket, Transport};
use iomapfs::{mount, session};

#[derive(Parser)]
#[command(
    name = "iomapfs",
    version,
    about = "Serve an ext4 filesystem (image file or block device) through FUSE, with FUSE iomap when the kernel offers it. `iomapfs replay --help`: play a session recorded with -o record=FILE back.",
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

/// `iomapfs replay`: a recording played back against a fresh server on a copy of the image.
#[derive(Parser)]
#[command(
    name = "iomapfs replay",
    about = "Play a session recorded with `-o record=FILE` back against a fresh server on a copy of IMAGE (never changed), in process, and report the first reply that differs or breaks the kernel's iomap rules. Exit 0: no difference; 1: a difference; 2: the replay could not run."
)]
struct ReplayCli {
    /// The recording (`-o record=FILE`; plain or .zst).
    recording: PathBuf,
    /// The image (or a copy of the device) as it was when the recorded server started.
    #[arg(long, value_name = "IMAGE")]
    image: PathBuf,
    /// Mount options for the replay's server after the recorded ones (repeatable; later
    /// words win), e.g. `-o fault=...` in a test build.
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<String>,
    /// Where the copy of the image goes (default: the temporary directory).
    #[arg(long, value_name = "DIR")]
    workdir: Option<PathBuf>,
}

fn replay_main(args: impl Iterator<Item = std::ffi::OsString>) -> ! {
    let cli = ReplayCli::parse_from(args);
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("iomapfs=warn")),
        )
        .with_writer(std::io::stderr);
    subscriber.init();
    let cfg = iomapfs::replay::Config {
        recording: cli.recording,
        image: cli.image,
        options: cli.options,
        workdir: cli.workdir,
    };
    match iomapfs::replay::replay(&cfg) {
        Ok(report) => {
            println!("{report}");
            std::process::exit(i32::from(report.finding.is_some()));
        }
        Err(e) => {
            eprintln!("iomapfs replay: {e:#}");
            std::process::exit(2);
        }
    }
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
        Ok(Invocation::Server) => {
            // `iomapfs replay ...` (a source file named `replay` is `./replay`).
            if std::env::args_os().nth(1).is_some_and(|a| a == "replay") {
                let name = std::ffi::OsString::from("iomapfs replay");
                replay_main(std::iter::once(name).chain(std::env::args_os().skip(2)));
            }
            Cli::parse()
        }
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

fn run(cli: &Cli, mut opts: MountOptions) -> Result<()> {
    // A remount changes the live mount, whose server holds the source's lock.
    if opts.remount {
        let Some(mountpoint) = &cli.mountpoint else {
            anyhow::bail!("remount needs the mount point");
        };
        return iomapfs::mount::remount(mountpoint, &opts);
    }
    // Held until the process exits (after the final flush), also by the daemonized child.
    let _lock = iomapfs::lock::lock_source(&cli.source, Duration::from_secs(opts.lock_timeout))?;
    if opts.preen && !opts.read_only {
        iomapfs::preen::preen(&cli.source)?;
    }
    // A harness's IOMAPFS_RECORD_DIR: save the filesystem as it is now, then record.
    iomapfs::record::harness::prepare(&cli.source, &mut opts);
    if let Some(path) = &cli.vhost_user_socket {
        return serve_virtiofs(cli, path, opts);
    }
    let fs = ext2fs::Fs::open(&cli.source, !opts.read_only).with_context(|| {
        format!(
            "cannot open the ext4 filesystem on {}",
            cli.source.display()
        )
    })?;
    let block_size = fs.block_size();
    let fs_info = fs.info();
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
        let info = SessionInfo {
            transport: "kernel-socket",
            iomap_capable: true,
            source: &cli.source,
            options: &cli.options,
            fs: &fs_info,
        };
        let (transport, recorder) = record(transport, &server, &info)?;
        server.attach(transport.clone(), true);
        first_request(&server, transport.as_ref())?;
        stop_on_signals(server.clone(), transport.clone(), None)?;
        return finish_recording(session::serve(server, transport, threads), recorder);
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
    let info = SessionInfo {
        transport: "dev-fuse",
        iomap_capable: is_blockdev,
        source: &cli.source,
        options: &cli.options,
        fs: &fs_info,
    };
    let (transport, recorder) = match record(transport, &server, &info) {
        Ok(r) => r,
        Err(e) => {
            mount::detach(&mounted.mountpoint);
            return Err(e);
        }
    };
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
    finish_recording(session::serve(server, transport, threads), recorder)
}

/// The transport to serve, and the recorder behind it when the session is recorded.
type Recorded = (Arc<dyn Transport>, Option<Arc<Recorder>>);

/// With `-o record=FILE`, wraps the transport so the session is recorded (the header
/// written now: it says how to start the same server again).
fn record(
    transport: Arc<dyn Transport>,
    server: &Server,
    info: &SessionInfo<'_>,
) -> Result<Recorded> {
    let Some(recorder) = recorder(server.options(), info)? else {
        return Ok((transport, None));
    };
    let wrapped: Arc<dyn Transport> = Arc::new(Recording::new(transport, recorder.clone()));
    Ok((wrapped, Some(recorder)))
}

/// With `-o record=FILE`, the recorder, its header written.
fn recorder(opts: &MountOptions, info: &SessionInfo<'_>) -> Result<Option<Arc<Recorder>>> {
    let Some(path) = opts.record.as_ref() else {
        return Ok(None);
    };
    let flush_every = Duration::from_millis(opts.record_flush_ms);
    let recorder = Recorder::create_with_flush(path, opts.record_max, &info.meta(), flush_every)
        .with_context(|| format!("cannot create the recording {}", path.display()))?;
    tracing::info!("recording the session to {}", path.display());
    Ok(Some(recorder))
}

/// The session is over: the recording gets its end marker, whatever the session's result.
fn finish_recording(served: Result<()>, recorder: Option<Arc<Recorder>>) -> Result<()> {
    if let Some(recorder) = recorder {
        recorder.finish();
    }
    served
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
/// again for each mount after a DESTROY; the flock, the preen and the recording (all the
/// mounts in one) are once per process.
fn serve_virtiofs(cli: &Cli, socket: &std::path::Path, opts: MountOptions) -> Result<()> {
    let source = cli.source.as_path();
    if opts.iomap == IomapPolicy::On {
        bail!(
            "iomap=on cannot work over virtio-fs: the guest kernel does iomap I/O only on the \
             block device of a fuseblk mount; use iomap=auto or off"
        );
    }
    let recorder = match &opts.record {
        Some(_) => {
            // The filesystem as the first mount will find it: a replay checks its image.
            let (fs, _) = open_source(source, true)?;
            let info = SessionInfo {
                transport: iomapfs::record::TRANSPORT_VHOST_USER,
                iomap_capable: false,
                source,
                options: &cli.options,
                fs: &fs.info(),
            };
            recorder(&opts, &info)?
        }
        None => None,
    };
    let threads = opts.threads;
    let source_path = source.to_path_buf();
    let open = move || {
        let (fs, data) = open_source(&source_path, opts.read_only)?;
        Ok(Server::new(fs, data, opts.clone()))
    };
    // The backend starts its queue and commit threads at once: they must inherit the mask.
    block_stop_signals()?;
    let backend = iomapfs::vhost_user::VirtioFs::new(Box::new(open), threads, recorder)?;
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
