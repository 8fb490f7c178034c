//! An in-memory model of a directory tree (sparse file contents, symlinks, hard links,
//! xattrs, modes) for the random-operation test. Each mutation applies POSIX/Linux rules
//! and returns the errno the kernel would give, so real results can be compared with it.

use nix::errno::Errno;
use std::collections::BTreeMap;
use test_support::oracle::{Expect, Expected};
use test_support::sparse::SparseData;

pub type Id = usize;
const ROOT: Id = 0;

#[derive(Clone, Debug)]
pub enum Kind {
    File(SparseData),
    Dir(BTreeMap<String, Id>),
    Symlink(Vec<u8>),
}

#[derive(Clone, Debug)]
pub struct Node {
    pub kind: Kind,
    pub mode: u32,
    /// Links for non-directories (directories: see `Model::nlink`).
    pub links: u32,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl Node {
    fn new(kind: Kind, mode: u32) -> Self {
        Node {
            kind,
            mode,
            links: 1,
            xattrs: BTreeMap::new(),
        }
    }
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir(_))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XattrFlag {
    Any,
    Create,
    Replace,
}

pub type Res = Result<(), Errno>;

#[derive(Clone, Debug)]
pub struct Model {
    nodes: BTreeMap<Id, Node>,
    next: Id,
}

impl Default for Model {
    fn default() -> Self {
        Self::new()
    }
}

/// Splits "a/b/c" into ("a/b", "c"); the root is "".
fn split(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

/// Whether `inner` lies strictly below `outer`.
fn is_below(inner: &str, outer: &str) -> bool {
    inner.len() > outer.len() && inner.starts_with(outer) && inner.as_bytes()[outer.len()] == b'/'
}

impl Model {
    /// A fresh filesystem: an empty root directory, mode 0755.
    pub fn new() -> Self {
        let mut nodes = BTreeMap::new();
        nodes.insert(ROOT, Node::new(Kind::Dir(BTreeMap::new()), 0o755));
        Model {
            nodes,
            next: ROOT + 1,
        }
    }

    pub fn node(&self, id: Id) -> &Node {
        &self.nodes[&id]
    }

    pub fn lookup(&self, path: &str) -> Option<Id> {
        let mut id = ROOT;
        for name in path.split('/').filter(|s| !s.is_empty()) {
            match &self.nodes[&id].kind {
                Kind::Dir(entries) => id = *entries.get(name)?,
                _ => return None,
            }
        }
        Some(id)
    }

    /// Every path but the root, parents before children.
    pub fn paths(&self) -> Vec<(String, Id)> {
        let mut out = Vec::new();
        let mut stack = vec![(String::new(), ROOT)];
        while let Some((path, id)) = stack.pop() {
            if let Kind::Dir(entries) = &self.nodes[&id].kind {
                for (name, &child) in entries.iter().rev() {
                    let p = if path.is_empty() {
                        name.clone()
                    } else {
                        format!("{path}/{name}")
                    };
                    stack.push((p, child));
                }
            }
            if id != ROOT {
                out.push((path, id));
            }
        }
        out
    }

    /// Link count as stat reports it: 2 + subdirectories for a directory.
    pub fn nlink(&self, id: Id) -> u32 {
        match &self.nodes[&id].kind {
            Kind::Dir(entries) => {
                2 + entries.values().filter(|c| self.nodes[c].is_dir()).count() as u32
            }
            _ => self.nodes[&id].links,
        }
    }

    pub fn file_mut(&mut self, path: &str) -> Option<&mut SparseData> {
        let id = self.lookup(path)?;
        match &mut self.nodes.get_mut(&id)?.kind {
            Kind::File(d) => Some(d),
            _ => None,
        }
    }

    pub fn count(&self, pred: impl Fn(&Node) -> bool) -> usize {
        self.nodes.values().filter(|n| pred(n)).count()
    }

    /// The parent directory's id of a path to be created or removed.
    fn parent(&self, path: &str) -> Result<(Id, String), Errno> {
        let (dir, name) = split(path);
        let id = self.lookup(dir).ok_or(Errno::ENOENT)?;
        if !self.nodes[&id].is_dir() {
            return Err(Errno::ENOTDIR);
        }
        Ok((id, name.to_string()))
    }

    fn entries_mut(&mut self, dir: Id) -> &mut BTreeMap<String, Id> {
        match &mut self.nodes.get_mut(&dir).expect("dir exists").kind {
            Kind::Dir(e) => e,
            _ => unreachable!("parent() checked it is a directory"),
        }
    }

    fn add(&mut self, path: &str, node: Node) -> Res {
        let (dir, name) = self.parent(path)?;
        if self.lookup(path).is_some() {
            return Err(Errno::EEXIST);
        }
        let id = self.next;
        self.next += 1;
        self.nodes.insert(id, node);
        self.entries_mut(dir).insert(name, id);
        Ok(())
    }

    /// Removes the name; the node goes when its last link does.
    fn drop_name(&mut self, path: &str) {
        let (dir, name) = self.parent(path).expect("caller checked the path");
        let id = self
            .entries_mut(dir)
            .remove(&name)
            .expect("caller checked the path");
        let node = self.nodes.get_mut(&id).expect("linked node exists");
        node.links -= 1;
        if node.is_dir() || node.links == 0 {
            self.nodes.remove(&id);
        }
    }

    /// open(O_CREAT|O_EXCL).
    pub fn create(&mut self, path: &str, mode: u32) -> Res {
        self.add(path, Node::new(Kind::File(SparseData::new()), mode))
    }

    pub fn mkdir(&mut self, path: &str, mode: u32) -> Res {
        self.add(path, Node::new(Kind::Dir(BTreeMap::new()), mode))
    }

    pub fn symlink(&mut self, target: &[u8], path: &str) -> Res {
        self.add(path, Node::new(Kind::Symlink(target.to_vec()), 0o777))
    }

    /// link(2): the old name must exist (ENOENT), the new must not (EEXIST), and
    /// directories cannot be linked (EPERM), in that order.
    pub fn link(&mut self, from: &str, to: &str) -> Res {
        let id = self.lookup(from).ok_or(Errno::ENOENT)?;
        let (dir, name) = self.parent(to)?;
        if self.lookup(to).is_some() {
            return Err(Errno::EEXIST);
        }
        if self.nodes[&id].is_dir() {
            return Err(Errno::EPERM);
        }
        self.nodes.get_mut(&id).expect("exists").links += 1;
        self.entries_mut(dir).insert(name, id);
        Ok(())
    }

    pub fn unlink(&mut self, path: &str) -> Res {
        let id = self.lookup(path).ok_or(Errno::ENOENT)?;
        if self.nodes[&id].is_dir() {
            return Err(Errno::EISDIR);
        }
        self.drop_name(path);
        Ok(())
    }

    pub fn rmdir(&mut self, path: &str) -> Res {
        let id = self.lookup(path).ok_or(Errno::ENOENT)?;
        match &self.nodes[&id].kind {
            Kind::Dir(e) if !e.is_empty() => Err(Errno::ENOTEMPTY),
            Kind::Dir(_) => {
                self.drop_name(path);
                Ok(())
            }
            _ => Err(Errno::ENOTDIR),
        }
    }

    /// rename(2), or renameat2 with RENAME_NOREPLACE, following the order of the
    /// kernel's checks (fs/namei.c do_renameat2, vfs_rename).
    pub fn rename(&mut self, from: &str, to: &str, noreplace: bool) -> Res {
        let src = self.lookup(from).ok_or(Errno::ENOENT)?;
        let (to_dir, to_name) = self.parent(to)?;
        let dst = self.lookup(to);
        if noreplace && dst.is_some() {
            return Err(Errno::EEXIST);
        }
        if from == to {
            return Ok(());
        }
        if is_below(to, from) {
            return Err(Errno::EINVAL);
        }
        if is_below(from, to) {
            return Err(Errno::ENOTEMPTY);
        }
        if let Some(dst) = dst {
            if dst == src {
                return Ok(()); // two links to one inode: rename does nothing
            }
            match (&self.nodes[&src].kind, &self.nodes[&dst].kind) {
                (Kind::Dir(_), Kind::Dir(e)) if !e.is_empty() => return Err(Errno::ENOTEMPTY),
                (Kind::Dir(_), Kind::Dir(_)) => {}
                (Kind::Dir(_), _) => return Err(Errno::ENOTDIR),
                (_, Kind::Dir(_)) => return Err(Errno::EISDIR),
                _ => {}
            }
            self.drop_name(to);
        }
        let (from_dir, from_name) = self.parent(from)?;
        self.entries_mut(from_dir).remove(&from_name);
        self.entries_mut(to_dir).insert(to_name, src);
        Ok(())
    }

    pub fn chmod(&mut self, path: &str, mode: u32) -> Res {
        let id = self.lookup(path).ok_or(Errno::ENOENT)?;
        self.nodes.get_mut(&id).expect("exists").mode = mode & 0o7777;
        Ok(())
    }

    pub fn setxattr(&mut self, path: &str, name: &str, value: &[u8], flag: XattrFlag) -> Res {
        let id = self.lookup(path).ok_or(Errno::ENOENT)?;
        let x = &mut self.nodes.get_mut(&id).expect("exists").xattrs;
        match (flag, x.contains_key(name)) {
            (XattrFlag::Create, true) => Err(Errno::EEXIST),
            (XattrFlag::Replace, false) => Err(Errno::ENODATA),
            _ => {
                x.insert(name.to_string(), value.to_vec());
                Ok(())
            }
        }
    }

    pub fn removexattr(&mut self, path: &str, name: &str) -> Res {
        let id = self.lookup(path).ok_or(Errno::ENOENT)?;
        match self.nodes.get_mut(&id).expect("exists").xattrs.remove(name) {
            Some(_) => Ok(()),
            None => Err(Errno::ENODATA),
        }
    }

    /// The whole tree as the oracle's exact expectation.
    pub fn expected(&self) -> Expected {
        let mut e = Expected::default();
        e.exact = true;
        for (path, id) in self.paths() {
            let node = &self.nodes[&id];
            match &node.kind {
                Kind::File(d) => e.set(&path, Expect::File(d.clone())),
                Kind::Dir(_) => e.set(&path, Expect::Dir),
                Kind::Symlink(t) => e.set(&path, Expect::Symlink(t.clone())),
            }
            if !matches!(node.kind, Kind::Symlink(_)) {
                e.mode(&path, node.mode);
            }
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_rules() {
        let mut m = Model::new();
        m.mkdir("a", 0o755).unwrap();
        m.mkdir("a/b", 0o755).unwrap();
        m.create("a/b/f", 0o644).unwrap();
        m.create("g", 0o644).unwrap();
        assert_eq!(m.rename("a", "a/b/x", false), Err(Errno::EINVAL));
        assert_eq!(m.rename("a/b/f", "a", false), Err(Errno::ENOTEMPTY));
        assert_eq!(m.rename("g", "a/b", false), Err(Errno::EISDIR));
        assert_eq!(m.rename("a/b", "g", false), Err(Errno::ENOTDIR));
        assert_eq!(m.rename("g", "a/b/f", true), Err(Errno::EEXIST));
        m.link("g", "h").unwrap();
        assert_eq!(m.nlink(m.lookup("g").unwrap()), 2);
        assert_eq!(m.rename("g", "h", false), Ok(()));
        assert!(m.lookup("g").is_some() && m.lookup("h").is_some());
        assert_eq!(m.rename("g", "a/b/f", false), Ok(()));
        assert_eq!(m.nlink(m.lookup("h").unwrap()), 2);
        assert_eq!(m.nlink(m.lookup("a").unwrap()), 3);
        assert_eq!(m.rmdir("a"), Err(Errno::ENOTEMPTY));
        assert_eq!(m.unlink("a"), Err(Errno::EISDIR));
        assert_eq!(m.link("a", "z"), Err(Errno::EPERM));
        assert_eq!(m.link("h", "a"), Err(Errno::EEXIST));
        let paths: Vec<String> = m.paths().into_iter().map(|p| p.0).collect();
        assert_eq!(paths, ["a", "a/b", "a/b/f", "h"]);
    }
}
