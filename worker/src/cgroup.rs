//! Where this process sits in the control-group hierarchies the host mounts: the cgroup
//! v2 folder (for trial containment and memory limits) and the cgroup v1 folder of a
//! controller (memory limits on older hosts and some batch systems).

use std::path::{Path, PathBuf};

/// The mounts of one file-system type: `(mount point, root of the mount, super options)`.
fn mounts(fstype: &str) -> Vec<(PathBuf, String, String)> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return vec![];
    };
    // Fields: id parent major:minor root mount-point options ... - fstype source super.
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mut r = right.split(' ');
            (r.next()? == fstype).then_some(())?;
            let supers = r.nth(1).unwrap_or("").to_owned();
            let mut f = left.split(' ');
            let root = f.nth(3)?.to_owned();
            let point = PathBuf::from(f.next()?);
            Some((point, root, supers))
        })
        .collect()
}

/// This process's path in a hierarchy, from `/proc/self/cgroup`: the v2 line (`0::`)
/// when `controller` is `None`, else the v1 line naming the controller.
fn own_path(controller: Option<&str>) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        let hit = match controller {
            None => ctrls.is_empty(),
            Some(c) => ctrls.split(',').any(|x| x == c),
        };
        hit.then(|| path.to_owned())
    })
}

/// The folder of `path` under a mount whose root is `root` (in a container the mount's
/// root is often the container's own cgroup).
fn under(point: &Path, root: &str, path: &str) -> PathBuf {
    let rel = path.strip_prefix(root).unwrap_or(path);
    point.join(rel.trim_start_matches('/'))
}

/// This process's cgroup v2 folder, if a cgroup v2 hierarchy is mounted.
pub fn v2_dir() -> Option<PathBuf> {
    let path = own_path(None)?;
    let (point, root, _) = mounts("cgroup2").into_iter().next()?;
    Some(under(&point, &root, &path))
}

/// This process's cgroup v1 folder for `controller` (e.g. `memory`), if mounted.
pub fn v1_dir(controller: &str) -> Option<PathBuf> {
    let path = own_path(Some(controller))?;
    let (point, root, _) = mounts("cgroup")
        .into_iter()
        .find(|(_, _, supers)| supers.split(',').any(|o| o == controller))?;
    Some(under(&point, &root, &path))
}
