//! The mount(8) helper convention: `mount -t fuse.iomapfs SOURCE DIR -o OPTS` runs
//! `/sbin/mount.fuse.iomapfs SOURCE DIR [-sfnv] [-o OPTS] [-t TYPE] [-N NS]`, a link to the
//! `iomapfs` binary. We translate that into our own command line (daemonizing).

/// The name mount(8) looks for.
pub const HELPER_NAME: &str = "mount.fuse.iomapfs";

/// True when this process was started through the helper name.
pub fn invoked_as_helper() -> bool {
    std::env::args_os()
        .next()
        .and_then(|a| std::path::Path::new(&a).file_name().map(|n| n == HELPER_NAME))
        .unwrap_or(false)
}

/// Turns helper arguments (without argv[0]) into `iomapfs` arguments (with argv[0]).
pub fn translate(args: impl IntoIterator<Item = String>) -> Result<Vec<String>, String> {
    let mut args = args.into_iter();
    let mut positional = Vec::new();
    let mut options = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-o" => options.push(args.next().ok_or("-o needs an option list")?),
            // sloppy, fake, no-mtab, verbose: nothing to do for us.
            "-s" | "-f" | "-n" | "-v" => {}
            "-t" | "-N" => {
                args.next().ok_or(format!("{arg} needs a value"))?;
            }
            s if s.starts_with("-o") => options.push(s[2..].to_string()),
            s if s.starts_with('-') => return Err(format!("unknown flag {s}")),
            _ => positional.push(arg),
        }
    }
    if positional.len() != 2 {
        return Err("usage: mount.fuse.iomapfs SOURCE MOUNTPOINT [-o options]".into());
    }
    let mut out = vec!["iomapfs".to_string()];
    out.extend(positional);
    for o in options {
        out.push("-o".into());
        out.push(o);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn translates_the_mount_helper_convention() {
        let got = translate(s(&["/dev/vdb", "/mnt", "-n", "-o", "rw,allow_other", "-t", "fuse.iomapfs"])).unwrap();
        assert_eq!(got, s(&["iomapfs", "/dev/vdb", "/mnt", "-o", "rw,allow_other"]));
    }

    #[test]
    fn rejects_what_it_cannot_understand() {
        assert!(translate(s(&["/dev/vdb"])).unwrap_err().contains("usage"));
        assert!(translate(s(&["/dev/vdb", "/mnt", "-x"])).unwrap_err().contains("unknown flag"));
        assert!(translate(s(&["/dev/vdb", "/mnt", "-o"])).unwrap_err().contains("needs"));
    }
}
