//! Helpers shared by unit tests that need the real machine: the docker CLI and containers
//! started from the image `cargo xtask test` builds (`docker import` of busybox-static;
//! nothing can be pulled).

/// The test image, built by `cargo xtask test`.
pub(crate) const TEST_IMAGE: &str = "collector-test/busybox:latest";

use std::process::Command;

/// A container started for a test, removed (`docker rm -f`) on drop, with its ECS-style
/// cgroup parent removed from every hierarchy.
pub(crate) struct TestContainer {
    /// Full id.
    pub(crate) id: String,
    /// The 32-hex task id used in `--cgroup-parent /ecs/<task>`.
    pub(crate) task: String,
}

/// A random 32-hex task id.
pub(crate) fn random_task_id() -> String {
    let bytes = std::fs::read("/proc/sys/kernel/random/uuid").unwrap();
    String::from_utf8(bytes).unwrap().trim().replace('-', "")
}

/// Runs the docker CLI; panics with its stderr when it fails. Output trimmed.
pub(crate) fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("these tests need the docker CLI and a running dockerd");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

impl TestContainer {
    /// `docker run -d --cgroup-parent /ecs/<task> collector-test/busybox:latest sleep 30`.
    pub(crate) fn run() -> Self {
        let task = random_task_id();
        let parent = format!("/ecs/{task}");
        let id = docker(&[
            "run",
            "-d",
            "--cgroup-parent",
            &parent,
            TEST_IMAGE,
            "sleep",
            "30",
        ]);
        Self { id, task }
    }

    /// `docker create collector-test/busybox:latest true`: a directory in the Docker root, no cgroup.
    pub(crate) fn create() -> Self {
        let id = docker(&["create", TEST_IMAGE, "true"]);
        Self {
            id,
            task: random_task_id(),
        }
    }

    /// Host PID of the container's init process.
    pub(crate) fn pid(&self) -> i32 {
        docker(&["inspect", "-f", "{{.State.Pid}}", &self.id])
            .parse()
            .unwrap()
    }

    /// `docker rm -f`, now.
    pub(crate) fn remove(&self) {
        docker(&["rm", "-f", &self.id]);
    }

    /// `docker kill`: the process ends, the cgroup goes, the container stays.
    pub(crate) fn kill(&self) {
        docker(&["kill", &self.id]);
    }
}

impl Drop for TestContainer {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.id]).output();
        // Docker leaves `--cgroup-parent` directories behind: remove ours (best effort,
        // only empty cgroups can be removed).
        if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
            for entry in entries.flatten() {
                let _ = std::fs::remove_dir(entry.path().join("ecs").join(&self.task));
            }
        }
    }
}
