//! Cgroup paths and `/proc/<pid>/cgroup` files.
//!
//! Beyond "does not panic": a path that parses names a valid container id (64 lowercase hex,
//! or Fargate's `<32 hex>-<digits>`) that occurs in the path, and a task id that does too;
//! `parse_container_dir` agrees with `parse_cgroup_path` when it answers; `container_of`
//! returns one of the file's own paths, and what that path parses to.

#![no_main]

use collector::identify::cgroup::{
    container_of, parse_cgroup_path, parse_container_dir, parse_proc_cgroup,
};
use collector::identify::{ContainerId, TaskId};
use libfuzzer_sys::fuzz_target;

fn check_path(path: &str) {
    let hint = parse_cgroup_path(path);
    if let Some(hint) = &hint {
        let id = hint.container_id.as_str();
        let valid = (id.len() == 64
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            || ContainerId::parse(id).is_some_and(|c| c.as_str().contains('-'));
        assert!(valid, "container id {id:?} from {path:?}");
        assert!(path.contains(id), "container id {id:?} is not in {path:?}");
        if let Some(task) = &hint.task_id {
            assert_eq!(TaskId::parse(task.as_str()).as_ref(), Some(task));
            assert!(
                path.to_ascii_lowercase().contains(task.as_str()),
                "task id {task} is not in {path:?}"
            );
        }
    }
    if let Some(dir) = parse_container_dir(path) {
        assert_eq!(Some(&dir), hint.as_ref(), "{path:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_path(text);
    let pc = parse_proc_cgroup(text);
    for entry in &pc.entries {
        check_path(entry.path);
    }
    if let Some((hint, path)) = container_of(&pc) {
        assert!(
            pc.entries.iter().any(|e| e.path == path),
            "{path:?} is not a line's path"
        );
        assert_eq!(parse_cgroup_path(&path), Some(hint));
    }
});
