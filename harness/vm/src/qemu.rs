//! The QEMU command line: machine, accelerator, kernel, disks, share, channels.
use std::path::{Path, PathBuf};

/// Machine types the harness knows how to wire up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Machine {
    /// virtio-mmio devices, no PCI, no firmware delays: the fastest boot.
    Microvm,
    /// The classic PC with virtio-pci devices: works with any kernel.
    Pc,
}

impl Machine {
    pub fn parse(s: &str) -> Option<Machine> {
        match s {
            "microvm" => Some(Machine::Microvm),
            "pc" => Some(Machine::Pc),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Machine::Microvm => "microvm",
            Machine::Pc => "pc",
        }
    }

    /// Device name suffix: virtio-mmio on microvm, PCI on pc.
    fn virtio(self, kind: &str) -> String {
        match self {
            Machine::Microvm => format!("virtio-{kind}-device"),
            Machine::Pc => format!("virtio-{kind}-pci"),
        }
    }

    /// The vhost-user-fs device: virtio-mmio on microvm, PCI on pc.
    fn vhost_user_fs(self) -> &'static str {
        match self {
            Machine::Microvm => "vhost-user-fs-device",
            Machine::Pc => "vhost-user-fs-pci",
        }
    }

    fn machine_arg(self) -> &'static str {
        match self {
            // No RTC: with 6 virtio-mmio devices and no ACPI its IRQ 8 collides
            // with the fifth device. No option ROMs.
            // Without ACPI, QEMU lists the virtio-mmio devices on the kernel
            // command line, which kernels without ACPI (like ours) need.
            Machine::Microvm => "microvm,rtc=off,x-option-roms=off,acpi=off",
            Machine::Pc => "pc",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// A virtio-blk disk with a stable serial (the guest finds it by serial).
#[derive(Debug, Clone)]
pub struct Disk {
    pub path: PathBuf,
    pub serial: String,
    /// Boot a copy-on-write view; the file is never written.
    pub snapshot: bool,
}

/// A virtio-fs share: a vhost-user backend on the host (iomapfs `--vhost-user-socket`)
/// listening on `socket`; the guest mounts it with `mount -t virtiofs TAG DIR`.
#[derive(Debug, Clone)]
pub struct VirtioFs {
    pub tag: String,
    pub socket: PathBuf,
}

/// How the console is connected.
#[derive(Debug, Clone)]
pub enum Console {
    /// A unix socket in the run directory the host reads (and writes sysrq to).
    /// QEMU waits for the host to connect before starting the guest.
    Socket(PathBuf),
    /// The terminal, for interactive shells (Ctrl-A X quits, Ctrl-A B sends break).
    Stdio,
}

#[derive(Debug, Clone)]
pub struct QemuConfig {
    pub binary: PathBuf,
    /// Unique name, also the process name (so leftover QEMUs can be found).
    pub name: String,
    pub machine: Machine,
    pub accel: Accel,
    pub cpus: u32,
    pub memory_mb: u32,
    pub kernel: PathBuf,
    pub cmdline: String,
    pub disks: Vec<Disk>,
    /// virtio-fs shares; with any, guest memory is a shared memfd the backends map.
    pub virtiofs: Vec<VirtioFs>,
    /// Directory the guest boots from (read-only 9p root holding the agent).
    pub boot_dir: PathBuf,
    /// Directory shared read-write with the guest (tag `harness`).
    pub share_dir: PathBuf,
    /// How `share_dir` reaches the guest: `None`, QEMU's own 9p server; `Some(socket)`,
    /// a vhost-user-fs device whose backend (virtiofsd, serving `share_dir`) listens there.
    pub share_socket: Option<PathBuf>,
    /// File the event port writes to.
    pub events_file: PathBuf,
    pub console: Console,
    /// QMP socket for sysrq and clean quits.
    pub qmp_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
}

/// Mount tag of the boot root. The kernel uses `root=` as the 9p tag when
/// mounting a 9p root, and this name works on old and new kernels alike.
pub const BOOT_TAG: &str = "/dev/root";

fn path(p: &Path) -> String {
    // QEMU splits options on commas; double them in paths.
    p.display().to_string().replace(',', ",,")
}

impl QemuConfig {
    /// The kernel command line the harness needs (the caller adds its own).
    pub fn base_cmdline(machine: Machine) -> String {
        let mut c = vec![
            "console=ttyS0".to_string(),
            format!("root={BOOT_TAG}"),
            "rootfstype=9p".into(),
            "rootflags=trans=virtio,version=9p2000.L,msize=524288,cache=loose".into(),
            "ro".into(),
            "init=/agent".into(),
            // A panic reboots at once, by triple fault (no ACPI or keyboard
            // controller needed); with -no-reboot that ends QEMU.
            "panic=-1".into(),
            "reboot=t".into(),
            "oops=panic".into(),
            // Quiet boot; the agent raises the console level once it runs.
            "loglevel=4".into(),
            "harness.root=serial:root".into(),
        ];
        // Probe only the one serial port there is.
        c.push("8250.nr_uarts=1".into());
        match machine {
            // microvm runs without an RTC (see machine_arg); probing for one
            // costs about a second under TCG.
            Machine::Microvm => c.push("initcall_blacklist=cmos_init".into()),
            // No PS/2 probing delays.
            Machine::Pc => c.push("i8042.noaux".into()),
        }
        c.join(" ")
    }

    pub fn args(&self) -> Vec<String> {
        let m = self.machine;
        let mut a: Vec<String> = vec![];
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        push(&["-name", &format!("{},process={}", self.name, self.name)]);
        push(&[
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ]);
        if self.virtiofs.is_empty() && self.share_socket.is_none() {
            push(&["-machine", m.machine_arg()]);
        } else {
            // vhost-user backends read and write guest memory directly: it must be a
            // shared file they can map, not QEMU's private anonymous memory.
            push(&[
                "-object",
                &format!(
                    "memory-backend-memfd,id=mem,size={}M,share=on",
                    self.memory_mb
                ),
                "-machine",
                &format!("{},memory-backend=mem", m.machine_arg()),
            ]);
        }
        match self.accel {
            Accel::Kvm => push(&["-accel", "kvm", "-cpu", "host"]),
            Accel::Tcg => push(&["-accel", "tcg"]),
        }
        push(&[
            "-smp",
            &self.cpus.to_string(),
            "-m",
            &format!("{}M", self.memory_mb),
        ]);
        push(&["-kernel", &path(&self.kernel), "-append", &self.cmdline]);
        match &self.console {
            Console::Socket(sock) => push(&[
                "-chardev",
                &format!("socket,id=con,path={},server=on,wait=on", path(sock)),
                "-serial",
                "chardev:con",
            ]),
            Console::Stdio => push(&[
                "-chardev",
                "stdio,id=con,mux=on,signal=off",
                "-serial",
                "chardev:con",
                "-mon",
                "chardev=con,mode=readline",
            ]),
        }
        for (i, d) in self.disks.iter().enumerate() {
            let snap = if d.snapshot {
                ",snapshot=on"
            } else {
                ",cache=unsafe"
            };
            push(&[
                "-drive",
                &format!(
                    "file={},format=raw,if=none,id=disk{i},discard=unmap{snap}",
                    path(&d.path)
                ),
                "-device",
                &format!("{},drive=disk{i},serial={}", m.virtio("blk"), d.serial),
            ]);
        }
        for (i, share) in self.virtiofs.iter().enumerate() {
            push(&[
                "-chardev",
                &format!("socket,id=vfs{i},path={}", path(&share.socket)),
                "-device",
                // A request queue per vCPU, up to 4 (iomapfs offers `threads=`, 8 by
                // default): the guest maps each CPU to a queue.
                &format!(
                    "{},chardev=vfs{i},tag={},num-request-queues={}",
                    m.vhost_user_fs(),
                    share.tag,
                    self.cpus.clamp(1, 4)
                ),
            ]);
        }
        push(&[
            "-fsdev",
            &format!(
                "local,id=boot,path={},security_model=none,readonly=on",
                path(&self.boot_dir)
            ),
            "-device",
            &format!("{},fsdev=boot,mount_tag={BOOT_TAG}", m.virtio("9p")),
        ]);
        match &self.share_socket {
            Some(sock) => push(&[
                "-chardev",
                &format!("socket,id=vfsshare,path={}", path(sock)),
                "-device",
                &format!(
                    "{},chardev=vfsshare,tag={}",
                    m.vhost_user_fs(),
                    events::SHARE_TAG
                ),
            ]),
            None => push(&[
                "-fsdev",
                &format!(
                    "local,id=share,path={},security_model=none,multidevs=remap",
                    path(&self.share_dir)
                ),
                "-device",
                &format!(
                    "{},fsdev=share,mount_tag={}",
                    m.virtio("9p"),
                    events::SHARE_TAG
                ),
            ]),
        }
        push(&[
            "-device",
            &format!("{},id=vser", m.virtio("serial")),
            "-chardev",
            &format!("file,id=events,path={},append=on", path(&self.events_file)),
            "-device",
            &format!(
                "virtserialport,bus=vser.0,chardev=events,name={}",
                events::EVENT_PORT
            ),
        ]);
        if let Some(q) = &self.qmp_socket {
            push(&["-qmp", &format!("unix:{},server=on,wait=off", path(q))]);
        }
        if let Some(p) = &self.pid_file {
            push(&["-pidfile", &path(p)]);
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(machine: Machine) -> QemuConfig {
        QemuConfig {
            binary: "qemu-system-x86_64".into(),
            name: "harness-x".into(),
            machine,
            accel: Accel::Tcg,
            cpus: 2,
            memory_mb: 1024,
            kernel: "/k/bzImage".into(),
            cmdline: QemuConfig::base_cmdline(machine),
            disks: vec![
                Disk {
                    path: "/img/root,1.ext4".into(),
                    serial: "root".into(),
                    snapshot: true,
                },
                Disk {
                    path: "/run/test.img".into(),
                    serial: "test".into(),
                    snapshot: false,
                },
            ],
            virtiofs: vec![],
            boot_dir: "/run/boot".into(),
            share_dir: "/run".into(),
            share_socket: None,
            events_file: "/run/events.jsonl".into(),
            console: Console::Socket("/run/console.sock".into()),
            qmp_socket: Some("/run/qmp.sock".into()),
            pid_file: None,
        }
    }

    #[test]
    fn microvm_uses_mmio_devices_and_pc_uses_pci() {
        let a = cfg(Machine::Microvm).args().join(" ");
        assert!(
            a.contains("virtio-blk-device,drive=disk0,serial=root"),
            "{a}"
        );
        assert!(
            a.contains("virtio-9p-device,fsdev=share,mount_tag=harness"),
            "{a}"
        );
        assert!(!a.contains("-pci"), "{a}");
        let a = cfg(Machine::Pc).args().join(" ");
        assert!(a.contains("virtio-serial-pci,id=vser"), "{a}");
        assert!(a.contains("name=harness.events"), "{a}");
    }

    #[test]
    fn root_image_is_a_snapshot_and_commas_are_escaped() {
        let a = cfg(Machine::Pc).args();
        let drive = a.iter().find(|s| s.contains("id=disk0")).unwrap();
        assert!(drive.contains("file=/img/root,,1.ext4"), "{drive}");
        assert!(drive.contains("snapshot=on"), "{drive}");
        assert!(a.iter().any(|s| s == "-no-reboot"));
        let cmdline = &a[a.iter().position(|s| s == "-append").unwrap() + 1];
        assert!(
            cmdline.contains("panic=-1") && cmdline.contains("init=/agent"),
            "{cmdline}"
        );
    }

    /// Asserts that the joined QEMU arguments contain `needle`, showing them if not.
    fn has(args: &str, needle: &str) {
        assert!(args.contains(needle), "{needle:?} not in: {args}");
    }

    #[test]
    fn the_run_directory_is_9p_or_a_vhost_user_fs_device_with_shared_memory() {
        let a = cfg(Machine::Microvm).args().join(" ");
        has(&a, "-fsdev local,id=share,path=/run,");
        let mut c = cfg(Machine::Microvm);
        c.share_socket = Some("/tmp/h/harness.vfs.sock".into());
        let a = c.args().join(" ");
        assert!(!a.contains("id=share"), "{a}");
        has(&a, "-chardev socket,id=vfsshare,path=/tmp/h/harness.vfs.sock -device vhost-user-fs-device,chardev=vfsshare,tag=harness");
        has(
            &a,
            "-object memory-backend-memfd,id=mem,size=1024M,share=on",
        );
        // The boot root stays a read-only 9p share.
        has(&a, "path=/run/boot,security_model=none,readonly=on");
        c.machine = Machine::Pc;
        let a = c.args().join(" ");
        has(&a, "vhost-user-fs-pci,chardev=vfsshare,tag=harness");
    }

    #[test]
    fn virtiofs_shares_memory_and_adds_one_device_per_share() {
        let a = cfg(Machine::Microvm).args().join(" ");
        assert!(!a.contains("memory-backend"), "{a}");
        let mut c = cfg(Machine::Microvm);
        c.virtiofs = vec![VirtioFs {
            tag: "test".into(),
            socket: "/tmp/h/test,1.sock".into(),
        }];
        let a = c.args().join(" ");
        has(
            &a,
            "-object memory-backend-memfd,id=mem,size=1024M,share=on",
        );
        assert!(
            a.contains("-machine microvm,") && a.contains(",memory-backend=mem"),
            "{a}"
        );
        has(&a, "-chardev socket,id=vfs0,path=/tmp/h/test,,1.sock -device vhost-user-fs-device,chardev=vfs0,tag=test,num-request-queues=2");
        c.machine = Machine::Pc;
        let a = c.args().join(" ");
        has(&a, "-machine pc,memory-backend=mem");
        has(&a, "vhost-user-fs-pci,chardev=vfs0,tag=test");
    }
}
