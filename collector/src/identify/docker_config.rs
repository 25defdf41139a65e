//! Docker's on-disk container files (`config.v2.json`, `hostconfig.json`) and the API's inspect, read into one shape.
//!
//! dockerd keeps each container's state in `<docker_root>/containers/<id>/config.v2.json` and
//! its host settings in `hostconfig.json` next to it. Reading them works while the Docker socket
//! is down or slow, and costs no API call per container. The API's inspect
//! (`crate::discover::docker_api`) carries the same facts; both land in
//! [`DockerContainerInfo`] so callers never care which source answered.
//!
//! dockerd writes both files atomically (temporary file + rename, `container.toDisk` ->
//! `ioutils.AtomicWriteFile`), so a read never sees half a file; what can happen is that the
//! directory disappears under us (`docker rm`), which is [`DockerConfigError::ContainerNotFound`].

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use bollard::models::ContainerInspectResponse;
use serde::Deserialize;

use super::{ContainerId, ContainerState, DockerContainerInfo, Mount};

/// Name of the container state file inside `<docker_root>/containers/<id>/`.
pub const CONFIG_V2_FILE: &str = "config.v2.json";
/// Name of the host settings file (log driver, cgroup parent) next to it.
pub const HOSTCONFIG_FILE: &str = "hostconfig.json";

/// How Go's `time.Time{}` (the zero time) serialises: Docker writes it for "never" in
/// `StartedAt`/`FinishedAt` of a container that has not started or not finished.
const GO_ZERO_TIME_PREFIX: &str = "0001-01-01T00:00:00";

/// Errors reading Docker's container files or converting an inspect response.
#[derive(Debug, thiserror::Error)]
pub enum DockerConfigError {
    /// The container directory or its `config.v2.json` is gone: the container was removed
    /// (`docker rm`) or never existed. Callers treat this as "forget it", not as a fault.
    #[error("container {id} has no {}: removed?", path.display())]
    ContainerNotFound {
        /// The container asked for.
        id: ContainerId,
        /// The file that was missing.
        path: PathBuf,
    },
    /// A container file exists but could not be read (permissions, I/O error).
    #[error("cannot read {}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// `config.v2.json` is not the JSON shape dockerd writes.
    #[error("cannot parse {CONFIG_V2_FILE}")]
    ParseConfigV2 {
        /// The JSON error (carries line and column).
        #[source]
        source: serde_json::Error,
    },
    /// `hostconfig.json` is not the JSON shape dockerd writes.
    #[error("cannot parse {HOSTCONFIG_FILE}")]
    ParseHostConfig {
        /// The JSON error (carries line and column).
        #[source]
        source: serde_json::Error,
    },
    /// The id in the file or the inspect response is missing or is not a container id.
    #[error("invalid container id {id:?}")]
    ParseContainerId {
        /// What was found (empty when absent).
        id: String,
    },
    /// `config.v2.json` names another container than the directory it sits in.
    #[error("{CONFIG_V2_FILE} of container {expected} says its id is {found}")]
    CheckContainerId {
        /// The directory's container id.
        expected: ContainerId,
        /// The id inside the file.
        found: ContainerId,
    },
}

/// The subset of `config.v2.json` we read (moby `container.Container`); everything else is
/// ignored so new Docker versions keep parsing.
#[derive(Deserialize)]
struct ConfigV2 {
    #[serde(rename = "ID")]
    id: Option<String>,
    #[serde(rename = "Name")]
    name: Option<String>,
    #[serde(rename = "Config")]
    config: Option<ConfigV2Config>,
    #[serde(rename = "LogPath")]
    log_path: Option<String>,
    /// Keyed by destination (`map[string]*volumemounts.MountPoint`).
    #[serde(rename = "MountPoints")]
    mount_points: Option<BTreeMap<String, MountPointV2>>,
    #[serde(rename = "State")]
    state: Option<StateV2>,
    #[serde(rename = "Created")]
    created: Option<String>,
}

#[derive(Deserialize)]
struct ConfigV2Config {
    #[serde(rename = "Image")]
    image: Option<String>,
    /// `null` when the container was created without labels by some API clients.
    #[serde(rename = "Labels")]
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct MountPointV2 {
    #[serde(rename = "Source")]
    source: Option<String>,
    #[serde(rename = "Destination")]
    destination: Option<String>,
    #[serde(rename = "Name")]
    name: Option<String>,
    #[serde(rename = "Driver")]
    driver: Option<String>,
    #[serde(rename = "Type")]
    typ: Option<String>,
}

#[derive(Deserialize)]
struct StateV2 {
    #[serde(rename = "Running")]
    running: Option<bool>,
    #[serde(rename = "Pid")]
    pid: Option<i64>,
    #[serde(rename = "ExitCode")]
    exit_code: Option<i64>,
    #[serde(rename = "OOMKilled")]
    oom_killed: Option<bool>,
    #[serde(rename = "StartedAt")]
    started_at: Option<String>,
    #[serde(rename = "FinishedAt")]
    finished_at: Option<String>,
}

/// The subset of `hostconfig.json` we read (moby `container.HostConfig`).
#[derive(Deserialize)]
struct HostConfigV2 {
    #[serde(rename = "LogConfig")]
    log_config: Option<LogConfigV2>,
    #[serde(rename = "CgroupParent")]
    cgroup_parent: Option<String>,
}

#[derive(Deserialize)]
struct LogConfigV2 {
    #[serde(rename = "Type")]
    typ: Option<String>,
}

/// Parses `config.v2.json` (and, when given, `hostconfig.json`) into a
/// [`DockerContainerInfo`].
///
/// Only `ID` is required; every other field may be absent or `null`. `docker_root` resolves
/// local volumes whose `Source` is empty (some Docker versions fill it only while the volume is
/// mounted) to `<docker_root>/volumes/<name>/_data`, where the `local` driver keeps them.
///
/// # Errors
/// [`DockerConfigError::ParseConfigV2`]/[`DockerConfigError::ParseHostConfig`] when a file is
/// not JSON of the expected shape, [`DockerConfigError::ParseContainerId`] when `ID` is missing
/// or malformed.
pub fn parse_config_v2(
    config_v2: &[u8],
    hostconfig: Option<&[u8]>,
    docker_root: &Path,
) -> Result<DockerContainerInfo, DockerConfigError> {
    let config: ConfigV2 = serde_json::from_slice(config_v2)
        .map_err(|source| DockerConfigError::ParseConfigV2 { source })?;
    let host: Option<HostConfigV2> = hostconfig
        .map(serde_json::from_slice)
        .transpose()
        .map_err(|source| DockerConfigError::ParseHostConfig { source })?;
    let id = parse_id(config.id.as_deref())?;

    let (image, labels) = match config.config {
        Some(c) => (c.image, c.labels),
        None => (None, None),
    };
    let mut mounts: Vec<Mount> = config
        .mount_points
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(key, m)| {
            resolve_mount(
                m.source.as_deref(),
                // The map key is the destination; older files may leave the field empty.
                m.destination.as_deref().or(Some(key.as_str())),
                m.typ.as_deref(),
                m.name.as_deref(),
                m.driver.as_deref(),
                docker_root,
            )
        })
        .collect();
    mounts.sort_by(|a, b| a.destination.cmp(&b.destination));

    let state = config.state.map(|s| {
        build_state(
            s.running,
            s.pid,
            s.exit_code,
            s.oom_killed,
            s.started_at,
            s.finished_at,
        )
    });
    let (log_driver, cgroup_parent) = match host {
        Some(h) => (h.log_config.and_then(|l| l.typ), h.cgroup_parent),
        None => (None, None),
    };
    Ok(DockerContainerInfo {
        id,
        name: strip_name(config.name.as_deref()),
        image: image.unwrap_or_default(),
        labels: labels.unwrap_or_default(),
        log_path: non_empty(config.log_path).map(PathBuf::from),
        log_driver: non_empty(log_driver),
        mounts,
        state: state.unwrap_or_default(),
        cgroup_parent: non_empty(cgroup_parent),
        created: docker_time(config.created),
    })
}

/// Reads `<docker_root>/containers/<id>/config.v2.json` and `hostconfig.json` (optional) and
/// parses them with [`parse_config_v2`].
///
/// # Errors
/// [`DockerConfigError::ContainerNotFound`] when the directory or `config.v2.json` is gone
/// (`docker rm`), [`DockerConfigError::ReadFile`] for other I/O errors, the parse errors of
/// [`parse_config_v2`], and [`DockerConfigError::CheckContainerId`] when the file names another
/// container.
pub fn read_container_info(
    docker_root: &Path,
    id: &ContainerId,
) -> Result<DockerContainerInfo, DockerConfigError> {
    let dir = docker_root.join("containers").join(id.as_str());
    let config_path = dir.join(CONFIG_V2_FILE);
    let config = std::fs::read(&config_path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => DockerConfigError::ContainerNotFound {
            id: id.clone(),
            path: config_path.clone(),
        },
        _ => DockerConfigError::ReadFile {
            path: config_path.clone(),
            source,
        },
    })?;
    let host_path = dir.join(HOSTCONFIG_FILE);
    // hostconfig.json only adds the log driver and cgroup parent: its absence (a container
    // removed between the two reads, or a very old daemon) is not worth failing for.
    let host = match std::fs::read(&host_path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(DockerConfigError::ReadFile {
                path: host_path,
                source,
            });
        }
    };
    let info = parse_config_v2(&config, host.as_deref(), docker_root)?;
    if &info.id != id {
        return Err(DockerConfigError::CheckContainerId {
            expected: id.clone(),
            found: info.id,
        });
    }
    Ok(info)
}

/// Maps the API's inspect response (`GET /containers/{id}/json`) to the same shape as
/// [`parse_config_v2`], so both sources are interchangeable.
///
/// The image is `Config.Image` (the reference the container was created from), not the
/// top-level `Image` (the image id), matching `config.v2.json`'s `Config.Image`.
///
/// # Errors
/// [`DockerConfigError::ParseContainerId`] when `Id` is missing or malformed.
pub fn from_inspect(
    resp: &ContainerInspectResponse,
    docker_root: &Path,
) -> Result<DockerContainerInfo, DockerConfigError> {
    let id = parse_id(resp.id.as_deref())?;
    let config = resp.config.as_ref();
    let mut mounts: Vec<Mount> = resp
        .mounts
        .iter()
        .flatten()
        .filter_map(|m| {
            resolve_mount(
                m.source.as_deref(),
                m.destination.as_deref(),
                m.typ.as_deref(),
                m.name.as_deref(),
                m.driver.as_deref(),
                docker_root,
            )
        })
        .collect();
    mounts.sort_by(|a, b| a.destination.cmp(&b.destination));
    let state = resp.state.as_ref().map(|s| {
        build_state(
            s.running,
            s.pid,
            s.exit_code,
            s.oom_killed,
            s.started_at.clone(),
            s.finished_at.clone(),
        )
    });
    let host = resp.host_config.as_ref();
    Ok(DockerContainerInfo {
        id,
        name: strip_name(resp.name.as_deref()),
        image: config.and_then(|c| c.image.clone()).unwrap_or_default(),
        labels: config
            .and_then(|c| c.labels.as_ref())
            .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
        log_path: non_empty(resp.log_path.clone()).map(PathBuf::from),
        log_driver: non_empty(
            host.and_then(|h| h.log_config.as_ref())
                .and_then(|l| l.typ.clone()),
        ),
        mounts,
        state: state.unwrap_or_default(),
        cgroup_parent: non_empty(host.and_then(|h| h.cgroup_parent.clone())),
        created: docker_time(resp.created.clone()),
    })
}

fn parse_id(id: Option<&str>) -> Result<ContainerId, DockerConfigError> {
    let id = id.unwrap_or_default();
    ContainerId::parse(id).ok_or_else(|| DockerConfigError::ParseContainerId { id: id.to_owned() })
}

/// Docker stores names with a leading `/` (a legacy of links: `/<name>` is the root of the
/// link tree).
fn strip_name(name: Option<&str>) -> String {
    name.unwrap_or_default().trim_start_matches('/').to_owned()
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

/// Docker's timestamps, with the Go zero time (and empty strings) meaning "never".
fn docker_time(s: Option<String>) -> Option<String> {
    non_empty(s).filter(|s| !s.starts_with(GO_ZERO_TIME_PREFIX))
}

fn build_state(
    running: Option<bool>,
    pid: Option<i64>,
    exit_code: Option<i64>,
    oom_killed: Option<bool>,
    started_at: Option<String>,
    finished_at: Option<String>,
) -> ContainerState {
    let running = running.unwrap_or(false);
    let started_at = docker_time(started_at);
    ContainerState {
        running,
        // A PID outside i32 cannot be a Linux PID; treat it like "no process" rather than
        // fail the whole container.
        pid: pid.and_then(|p| i32::try_from(p).ok()).unwrap_or(0),
        // dockerd resets ExitCode to 0 when a container starts (`State.SetRunning`) and leaves
        // 0 on a container that never ran: only a stopped container that has started has a
        // meaningful one.
        exit_code: exit_code.filter(|_| !running && started_at.is_some()),
        oom_killed: oom_killed.unwrap_or(false),
        started_at,
        finished_at: docker_time(finished_at),
    }
}

/// Maps one mount point to host and container paths, or `None` when it has no host path we can
/// read (tmpfs, named pipes, volumes of non-local drivers that report no `Source`).
fn resolve_mount(
    source: Option<&str>,
    destination: Option<&str>,
    typ: Option<&str>,
    name: Option<&str>,
    driver: Option<&str>,
    docker_root: &Path,
) -> Option<Mount> {
    let destination = destination.filter(|d| !d.is_empty())?;
    let source = match source.filter(|s| !s.is_empty()) {
        Some(s) => PathBuf::from(s),
        None => {
            let name = name.filter(|n| !n.is_empty())?;
            let is_volume = matches!(typ, None | Some("") | Some("volume"));
            let local = matches!(driver, None | Some("") | Some("local"));
            // A volume name is one path component (moby validates `[a-zA-Z0-9][a-zA-Z0-9_.-]+`);
            // refuse anything that could point elsewhere.
            let safe = !name.contains('/') && name != "." && name != "..";
            if !(is_volume && local && safe) {
                return None;
            }
            docker_root.join("volumes").join(name).join("_data")
        }
    };
    Some(Mount {
        source,
        destination: PathBuf::from(destination),
    })
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    const ROOT: &str = "/var/lib/docker";

    fn testdata(name: &str) -> Vec<u8> {
        let path = format!("{}/testdata/docker/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap()
    }

    fn parse_fixture(prefix: &str) -> DockerContainerInfo {
        parse_config_v2(
            &testdata(&format!("{prefix}-config.v2.json")),
            Some(&testdata(&format!("{prefix}-hostconfig.json"))),
            Path::new(ROOT),
        )
        .unwrap()
    }

    #[test]
    fn running_container_fixture() {
        let info = parse_fixture("running");
        let id = "fc189333feb6b75f685994666673b854615047038c80cbb2bbd719da480e660c";
        assert_eq!(info.id.as_str(), id);
        assert_eq!(info.name, "collector-fixture");
        assert_eq!(info.image, "busybox:local");
        assert_eq!(
            info.labels
                .get("com.amazonaws.ecs.task-definition-version")
                .map(String::as_str),
            Some("24")
        );
        assert_eq!(info.labels.len(), 6);
        assert_eq!(
            info.log_path,
            Some(PathBuf::from(format!(
                "{ROOT}/containers/{id}/{id}-json.log"
            )))
        );
        assert_eq!(info.log_driver.as_deref(), Some("json-file"));
        assert_eq!(
            info.mounts,
            vec![
                Mount {
                    source: "/tmp/collector-fixture-bind".into(),
                    destination: "/data/bind".into()
                },
                Mount {
                    source: "/var/lib/docker/volumes/collector-fixture-vol/_data".into(),
                    destination: "/data/vol".into()
                },
            ]
        );
        assert_eq!(
            info.state,
            ContainerState {
                running: true,
                pid: 7635,
                exit_code: None,
                oom_killed: false,
                started_at: Some("2026-11-22T00:38:56.503366621Z".into()),
                finished_at: None,
            }
        );
        assert_eq!(
            info.cgroup_parent.as_deref(),
            Some("/ecs/8f03e41243824aea923aca126495f665")
        );
        assert_eq!(
            info.created.as_deref(),
            Some("2026-11-22T00:38:56.413979577Z")
        );
    }

    #[test]
    fn exited_and_created_fixtures() {
        let exited = parse_fixture("exited");
        assert_eq!(exited.state.exit_code, Some(3));
        assert!(!exited.state.running);
        assert_eq!(exited.state.pid, 0);
        assert_eq!(
            exited.state.finished_at.as_deref(),
            Some("2026-11-22T00:40:13.897679159Z")
        );
        assert!(exited.mounts.is_empty());
        assert_eq!(exited.cgroup_parent, None);
        assert_eq!(exited.labels.get("app").map(String::as_str), Some("demo"));

        // `docker create --log-driver none`: never started, no log file.
        let created = parse_fixture("created");
        assert_eq!(created.state, ContainerState::default());
        assert_eq!(created.log_path, None);
        assert_eq!(created.log_driver.as_deref(), Some("none"));
        assert!(created.labels.is_empty());
    }

    #[test]
    fn volume_without_source_resolves_under_docker_root() {
        let mut json: serde_json::Value =
            serde_json::from_slice(&testdata("running-config.v2.json")).unwrap();
        let mounts = json["MountPoints"].as_object_mut().unwrap();
        mounts["/data/vol"]["Source"] = "".into();
        // A tmpfs has no host path; a volume of a plugin driver has none we can know.
        mounts.insert(
            "/run".into(),
            serde_json::json!({"Source": "", "Destination": "/run", "Type": "tmpfs"}),
        );
        mounts.insert(
            "/plugin".into(),
            serde_json::json!({"Source": "", "Destination": "/plugin", "Type": "volume",
                "Name": "efs", "Driver": "amazon-ecs-volume-plugin"}),
        );
        mounts.insert(
            "/evil".into(),
            serde_json::json!({"Source": "", "Destination": "/evil", "Type": "volume",
                "Name": ".."}),
        );
        let bytes = serde_json::to_vec(&json).unwrap();
        let info = parse_config_v2(&bytes, None, Path::new("/host/docker")).unwrap();
        let got: Vec<(&Path, &Path)> = info
            .mounts
            .iter()
            .map(|m| (m.source.as_path(), m.destination.as_path()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    Path::new("/tmp/collector-fixture-bind"),
                    Path::new("/data/bind")
                ),
                (
                    Path::new("/host/docker/volumes/collector-fixture-vol/_data"),
                    Path::new("/data/vol")
                ),
            ]
        );
        // Without hostconfig.json, its fields are simply unknown.
        assert_eq!(info.log_driver, None);
        assert_eq!(info.cgroup_parent, None);
    }

    #[test]
    fn minimal_and_null_fields() {
        let id = "a".repeat(64);
        let cases = [
            format!(r#"{{"ID":"{id}"}}"#),
            format!(
                r#"{{"ID":"{id}","Name":null,"Config":{{"Labels":null,"Image":null}},
                "MountPoints":null,"State":null,"LogPath":"","Created":"0001-01-01T00:00:00Z",
                "SomeFutureField":{{"x":1}}}}"#
            ),
        ];
        for json in cases {
            let info = parse_config_v2(json.as_bytes(), Some(b"{}"), Path::new(ROOT)).unwrap();
            assert_eq!(info.id.as_str(), id, "{json}");
            assert_eq!(info.name, "", "{json}");
            assert!(info.labels.is_empty(), "{json}");
            assert_eq!(info.log_path, None, "{json}");
            assert_eq!(info.created, None, "{json}");
            assert_eq!(info.state, ContainerState::default(), "{json}");
        }
    }

    #[test]
    fn garbage_is_an_error() {
        let good_host = testdata("running-hostconfig.json");
        let good_config = testdata("running-config.v2.json");
        type Case<'a> = (&'a str, &'a [u8], Option<&'a [u8]>, &'a str);
        let cases: [Case<'_>; 7] = [
            ("empty", b"", None, "ParseConfigV2"),
            ("not json", b"\x00\xffgarbage", None, "ParseConfigV2"),
            (
                "truncated",
                &good_config[..good_config.len() / 2],
                None,
                "ParseConfigV2",
            ),
            ("array", b"[1,2]", None, "ParseConfigV2"),
            ("no id", br#"{"Name":"/x"}"#, None, "ParseContainerId"),
            ("bad id", br#"{"ID":"abc"}"#, None, "ParseContainerId"),
            (
                "bad hostconfig",
                &good_config,
                Some(b"{\"LogConfig\": 7}"),
                "ParseHostConfig",
            ),
        ];
        for (name, config, host, want) in cases {
            let err = parse_config_v2(config, host, Path::new(ROOT)).unwrap_err();
            let got = format!("{err:?}");
            assert!(got.starts_with(want), "{name}: {got}");
        }
        assert!(parse_config_v2(&good_config, Some(&good_host), Path::new(ROOT)).is_ok());
    }

    #[test]
    fn read_from_a_docker_root_tree() {
        let root = tempfile::tempdir().unwrap();
        let id =
            ContainerId::parse("fc189333feb6b75f685994666673b854615047038c80cbb2bbd719da480e660c")
                .unwrap();
        let missing = read_container_info(root.path(), &id).unwrap_err();
        assert!(
            matches!(missing, DockerConfigError::ContainerNotFound { .. }),
            "{missing:?}"
        );

        let dir = root.path().join("containers").join(id.as_str());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(CONFIG_V2_FILE), testdata("running-config.v2.json")).unwrap();
        let info = read_container_info(root.path(), &id).unwrap();
        assert_eq!(info.log_driver, None, "no hostconfig.json yet");
        std::fs::write(
            dir.join(HOSTCONFIG_FILE),
            testdata("running-hostconfig.json"),
        )
        .unwrap();
        let info = read_container_info(root.path(), &id).unwrap();
        assert_eq!(info.log_driver.as_deref(), Some("json-file"));
        assert_eq!(info.name, "collector-fixture");

        // A file copied into the wrong directory must not lend its identity.
        let other = ContainerId::parse(&"b".repeat(64)).unwrap();
        let other_dir = root.path().join("containers").join(other.as_str());
        std::fs::create_dir_all(&other_dir).unwrap();
        std::fs::write(
            other_dir.join(CONFIG_V2_FILE),
            testdata("running-config.v2.json"),
        )
        .unwrap();
        let err = read_container_info(root.path(), &other).unwrap_err();
        assert!(
            matches!(err, DockerConfigError::CheckContainerId { .. }),
            "{err:?}"
        );

        std::fs::remove_dir_all(&dir).unwrap();
        let err = read_container_info(root.path(), &id).unwrap_err();
        assert!(
            matches!(err, DockerConfigError::ContainerNotFound { .. }),
            "{err:?}"
        );
    }

    /// Removes the test's container and volume even when an assertion fails.
    struct Cleanup {
        name: String,
        volume: String,
        bind: PathBuf,
    }

    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = Command::new("docker")
                .args(["rm", "-f", "-v", &self.name])
                .output();
            let _ = Command::new("docker")
                .args(["volume", "rm", "-f", &self.volume])
                .output();
            let _ = std::fs::remove_dir_all(&self.bind);
        }
    }

    use crate::test_support::{TEST_IMAGE, docker};

    /// A real container read both ways, from dockerd's files and from the API, gives the
    /// same [`DockerContainerInfo`].
    #[tokio::test]
    async fn config_v2_and_inspect_agree_on_a_real_container() {
        let nonce = format!("{}-{}", std::process::id(), line!());
        let cleanup = Cleanup {
            name: format!("collector-test-docker-config-{nonce}"),
            volume: format!("collector-test-vol-{nonce}"),
            bind: std::env::temp_dir().join(format!("collector-test-bind-{nonce}")),
        };
        std::fs::create_dir_all(&cleanup.bind).unwrap();
        let bind = format!("{}:/data/bind:ro", cleanup.bind.display());
        let vol = format!("{}:/data/vol", cleanup.volume);
        let id = docker(&[
            "run",
            "-d",
            "--name",
            &cleanup.name,
            "-l",
            "com.amazonaws.ecs.task-definition-version=7",
            "-l",
            "collector.logs=/data/vol/*.log",
            "-v",
            &bind,
            "-v",
            &vol,
            TEST_IMAGE,
            "sleep",
            "60",
        ]);
        let id = ContainerId::parse(id.trim()).unwrap();

        let docker = bollard::Docker::connect_with_unix(
            "/var/run/docker.sock",
            10,
            bollard::API_DEFAULT_VERSION,
        )
        .unwrap()
        .negotiate_version()
        .await
        .unwrap();
        let resp = docker.inspect_container(id.as_str(), None).await.unwrap();
        let from_api = from_inspect(&resp, Path::new(ROOT)).unwrap();
        let from_disk = read_container_info(Path::new(ROOT), &id).unwrap();
        assert_eq!(from_disk, from_api);
        assert!(from_disk.state.running);
        assert!(from_disk.state.pid > 0);
        assert_eq!(from_disk.mounts.len(), 2);
        assert_eq!(
            from_disk.labels.get("collector.logs").map(String::as_str),
            Some("/data/vol/*.log")
        );
        drop(cleanup);
    }

    #[test]
    fn inspect_without_id_is_an_error() {
        let resp = ContainerInspectResponse::default();
        let err = from_inspect(&resp, Path::new(ROOT)).unwrap_err();
        assert!(
            matches!(err, DockerConfigError::ParseContainerId { .. }),
            "{err:?}"
        );
    }
}
