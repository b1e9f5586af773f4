//! `/proc/<pid>/mountinfo`, parsed (see proc(5)): the warm pool's slots check that their root is
//! a shared mount, and the Docker adapter finds where each cgroup hierarchy is mounted.

/// One line of mountinfo; escaped characters (`\040` for space, …) are decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The directory of the mounted filesystem that appears at `mount_point` (usually `/`).
    pub root: String,
    pub mount_point: String,
    /// Per-mount options (`ro`, `nosuid`, …).
    pub options: Vec<String>,
    /// Propagation tags such as `shared:12` or `master:3`.
    pub optional_fields: Vec<String>,
    pub fstype: String,
    pub super_options: Vec<String>,
}

/// Every well-formed line of `text`; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_line).collect()
}

/// The mount table of process `pid` (empty if it cannot be read).
pub fn of_pid(pid: u32) -> Vec<Mount> {
    parse(&std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default())
}

/// The mount table of this process (empty if `/proc` is unreadable).
pub fn of_self() -> Vec<Mount> {
    parse(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
}

fn parse_line(line: &str) -> Option<Mount> {
    let (left, right) = line.split_once(" - ")?;
    let left: Vec<&str> = left.split(' ').collect();
    let mut right = right.split(' ');
    let (fstype, _source, super_options) = (right.next()?, right.next()?, right.next()?);
    Some(Mount {
        root: unescape(left.get(3)?),
        mount_point: unescape(left.get(4)?),
        options: left.get(5)?.split(',').map(str::to_string).collect(),
        optional_fields: left.get(6..)?.iter().map(|f| f.to_string()).collect(),
        fstype: fstype.to_string(),
        super_options: super_options.split(',').map(str::to_string).collect(),
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_with_and_without_optional_fields() {
        let text = "\
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
57 23 8:1 /data /srv/a\\040b rw master:3 shared:4 - ext4 /dev/sda1 rw
garbage";
        let mounts = parse(text);
        assert_eq!(mounts.len(), 3);
        assert_eq!(mounts[0].optional_fields, vec!["shared:9"]);
        assert_eq!(mounts[0].super_options, vec!["rw", "memory"]);
        assert!(mounts[1].optional_fields.is_empty());
        assert_eq!(mounts[1].fstype, "cgroup2");
        assert_eq!(mounts[2].root, "/data");
        assert_eq!(mounts[2].mount_point, "/srv/a b");
        assert_eq!(mounts[2].optional_fields, vec!["master:3", "shared:4"]);
    }
}
