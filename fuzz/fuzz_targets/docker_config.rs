//! Docker's `config.v2.json` and `hostconfig.json` (the input is the first file, then
//! optionally a NUL and the second), and what the collector reads from a container's labels.
//!
//! Beyond "does not panic": a container that parses has a valid id, survives the JSON round
//! trip the state database puts it through, and a volume's host path stays inside
//! `<docker_root>/volumes`.

#![no_main]

use std::path::Path;

use collector::identify::docker_config::parse_config_v2;
use collector::identify::labels::{declared_log_globs, ecs_from_labels};
use collector::identify::{ContainerId, DockerContainerInfo};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (config, host) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], Some(&data[at + 1..])),
        None => (data, None),
    };
    let Ok(info) = parse_config_v2(config, host, Path::new("/var/lib/docker")) else {
        return;
    };
    assert_eq!(
        ContainerId::parse(info.id.as_str()).as_ref(),
        Some(&info.id)
    );
    let text = serde_json::to_vec(&info).expect("a container serialises");
    let again: DockerContainerInfo = serde_json::from_slice(&text).expect("and parses back");
    assert_eq!(again, info);
    // A mount's host path is the file's own `Source`, or a local volume's directory, which
    // must stay one level under `<docker_root>/volumes` whatever the volume's name.
    let volumes = Path::new("/var/lib/docker/volumes");
    for mount in &info.mounts {
        let source = mount.source.to_string_lossy();
        let from_file = config
            .windows(source.len().max(1))
            .any(|w| w == source.as_bytes());
        let volume = mount.source.file_name().is_some_and(|n| n == "_data")
            && mount.source.parent().and_then(Path::parent) == Some(volumes);
        assert!(from_file || volume, "mount source {source:?}");
    }
    let _ = ecs_from_labels(&info.labels);
    let _ = declared_log_globs(&info.labels);
});
