//! Self-tests of the harness: they pass without the collector, so a scenario failure is the
//! collector's and not the harness's.

use std::fs;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use serde_json::Value;

use crate::ecs_agent::ZERO_TASK_BODY;
use crate::{
    Check, CollectorProcess, FakeEcsAgent, TestContainer, TestTask, collector_bin, docker,
    docker_host, messages, random_hex, wait_until,
};

/// Docker answers, the image exists, and a test container gets the labels, cgroup layout, log
/// options and mounts the scenarios rely on, and is gone after drop.
#[test]
fn test_containers_have_what_the_scenarios_rely_on() {
    let host = docker_host().unwrap();
    assert!(!host.server_version.is_empty());
    assert!(host.root_dir.is_dir(), "{}", host.root_dir.display());

    let task = TestTask::new("harness");
    let mount = tempfile::tempdir().unwrap();
    let container = TestContainer::builder()
        .ecs(&task, "probe")
        .log_opt("max-size", "100k")
        .log_opt("max-file", "3")
        .bind(mount.path(), "/var/log/app")
        .shell("echo out; echo err >&2; echo file > /var/log/app/app.log; exec sleep 600")
        .create()
        .unwrap();
    assert!(container.pid().is_err(), "a created container does not run");
    container.start().unwrap();

    let label = |key: &str| container.inspect(&format!("{{{{index .Config.Labels {key:?}}}}}"));
    assert_eq!(label("collector-test").unwrap(), "1");
    assert_eq!(label("com.amazonaws.ecs.task-arn").unwrap(), task.arn);
    assert_eq!(label("com.amazonaws.ecs.container-name").unwrap(), "probe");
    assert_eq!(
        label("com.amazonaws.ecs.task-definition-version").unwrap(),
        "1"
    );
    assert!(
        container.name().starts_with("ecs-harness-1-probe-"),
        "{}",
        container.name()
    );
    assert_eq!(
        container.inspect("{{json .HostConfig.LogConfig}}").unwrap(),
        r#"{"Type":"json-file","Config":{"max-file":"3","max-size":"100k"}}"#
    );

    // Every hierarchy puts the container at /ecs/<task id>/<container id>.
    let cgroup = fs::read_to_string(format!("/proc/{}/cgroup", container.pid().unwrap())).unwrap();
    let want = format!(":{}/{}", task.cgroup_parent(), container.id());
    assert!(cgroup.lines().all(|line| line.ends_with(&want)), "{cgroup}");

    let (out, err) = wait_until(Duration::from_secs(10), "two lines in docker logs", || {
        let (out, err) = container.docker_logs()?;
        Ok(if out.is_empty() || err.is_empty() {
            Check::Waiting(format!("{out:?} {err:?}"))
        } else {
            Check::Done((out, err))
        })
    })
    .unwrap();
    assert_eq!(
        (messages(&out), messages(&err)),
        (vec!["out".into()], vec!["err".into()])
    );
    assert_eq!(
        fs::read_to_string(mount.path().join("app.log")).unwrap(),
        "file\n"
    );
    assert!(container.log_path().unwrap().is_file());

    let id = container.id().to_owned();
    drop(container);
    let left = docker(["ps", "--all", "--quiet", "--filter", &format!("id={id}")]).unwrap();
    assert!(left.is_empty(), "container {id} was not removed");
}

/// `wait_exit` and `run_time` see a short container's end; a failing `docker` command says
/// what Docker said.
#[test]
fn exits_are_observed_and_docker_errors_are_explained() {
    let container = TestContainer::builder()
        .shell("echo hi; exit 3")
        .start()
        .unwrap();
    assert_eq!(container.wait_exit(Duration::from_secs(10)).unwrap(), 3);
    assert!(container.run_time().unwrap() < Duration::from_secs(5));

    let missing = format!("collector-test-missing-{}", random_hex(8));
    let err = docker(["inspect", &missing]).unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains(&missing) && text.to_lowercase().contains("no such"),
        "{text}"
    );
}

/// GET `target` from the fake agent: (status, body as JSON).
fn get(agent: &FakeEcsAgent, target: &str) -> (u16, Value) {
    let address = agent.uri().trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&address).unwrap();
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: {address}\r\nAccept: */*\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(head.contains("Content-Type: application/json"), "{head}");
    (status, serde_json::from_str(body).unwrap())
}

/// The fake agent answers like the real one, with the test's identities in the fixtures'
/// shapes, and counts requests.
#[test]
fn fake_ecs_agent_answers_like_the_agent() {
    let agent = FakeEcsAgent::start().unwrap();
    let task = TestTask::new("fakeagent");
    let (web, worker) = (random_hex(64), random_hex(64));
    agent.add_container_id(&task, "web", &web, "ecs-fakeagent-1-web-0123");
    agent.add_container_id(&task, "worker", &worker, "ecs-fakeagent-1-worker-4567");
    let other = TestTask::new("other");
    agent.add_container_id(&other, "lonely", &random_hex(64), "ecs-other-1-lonely-89ab");

    let (status, metadata) = get(&agent, "/v1/metadata");
    assert_eq!(status, 200);
    assert_eq!(metadata["Cluster"], "collector-test");
    assert!(
        metadata["ContainerInstanceArn"]
            .as_str()
            .unwrap()
            .contains(":container-instance/")
    );
    assert!(metadata["Version"].is_string(), "{metadata}");

    for id in [web.as_str(), &web[..12], &worker[..5]] {
        let (status, body) = get(&agent, &format!("/v1/tasks?dockerid={id}"));
        assert_eq!(status, 200, "dockerid={id}");
        assert_eq!(body["Arn"], task.arn.as_str());
        assert_eq!(body["Family"], "fakeagent");
        assert_eq!(body["Version"], "1");
        assert_eq!(body["KnownStatus"], "RUNNING");
        let containers = body["Containers"].as_array().unwrap();
        let names: Vec<&str> = containers
            .iter()
            .map(|c| c["Name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["web", "worker"]);
        assert_eq!(containers[0]["DockerId"], web.as_str());
        assert_eq!(containers[1]["DockerName"], "ecs-fakeagent-1-worker-4567");
    }

    let zero: Value = serde_json::from_str(ZERO_TASK_BODY).unwrap();
    assert_eq!(
        get(&agent, &format!("/v1/tasks?dockerid={}", random_hex(64))),
        (404, zero.clone())
    );
    assert_eq!(get(&agent, "/v1/tasks?dockerid=").0, 404);

    let encoded = task.arn.replace(':', "%3A").replace('/', "%2F");
    let (status, body) = get(&agent, &format!("/v1/tasks?taskarn={encoded}"));
    assert_eq!(
        (status, body["Arn"].as_str()),
        (200, Some(task.arn.as_str()))
    );
    assert_eq!(
        get(
            &agent,
            &format!("/v1/tasks?taskarn={encoded}&dockerid={web}")
        )
        .0,
        400
    );

    let (status, all) = get(&agent, "/v1/tasks");
    assert_eq!(status, 200);
    assert_eq!(all["Tasks"].as_array().unwrap().len(), 2);

    assert_eq!(agent.request_count(), 9);
    assert_eq!(agent.requests()[1], format!("/v1/tasks?dockerid={web}"));
}

/// The binary is found (or built), and a collector gets a config that is valid TOML with the
/// test's paths.
#[test]
fn collector_binary_and_config_are_in_place() {
    let bin = collector_bin().unwrap();
    let mode = fs::metadata(&bin).unwrap().permissions().mode();
    assert!(mode & 0o111 != 0, "{} is not executable", bin.display());

    let agent = FakeEcsAgent::start().unwrap();
    let mut collector = CollectorProcess::builder()
        .ecs_agent(&agent)
        .docker_socket("/nowhere/docker.sock")
        .start()
        .unwrap();
    assert!(collector.pid().is_some());
    let text = fs::read_to_string(collector.dir().join("collector.toml")).unwrap();
    let config: toml::Table = text.parse().unwrap();
    assert_eq!(
        config["data_dir"].as_str().unwrap(),
        collector.data_dir().to_str().unwrap()
    );
    assert_eq!(
        config["host"]["docker_socket"].as_str(),
        Some("/nowhere/docker.sock")
    );
    assert_eq!(
        config["host"]["docker_root"]
            .as_str()
            .map(std::path::PathBuf::from),
        Some(docker_host().unwrap().root_dir.clone())
    );
    assert_eq!(
        config["ecs"]["agent_uri"].as_str(),
        Some(agent.uri().as_str())
    );
    assert_eq!(config["discovery"]["rescan_interval"].as_str(), Some("1s"));
    assert_eq!(collector.sink().root(), collector.data_dir().join("logs"));
    // Whatever the binary does today, the harness can stop it and restart it.
    let _ = collector.sigterm(Duration::from_secs(10));
    collector.restart().unwrap();
    collector.sigkill().unwrap();
    assert!(collector.check_running().is_err());
}
