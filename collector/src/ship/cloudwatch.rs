//! The CloudWatch Logs sink: PutLogEvents through `aws-sdk-cloudwatchlogs`.
//!
//! For each call the shipper hands over the batches that are waiting; their records are
//! grouped by destination (log group and log stream, rendered from the templates over each
//! container's identity, [`super::naming`]), and each destination's records become requests
//! within every PutLogEvents limit ([`super::cloudwatch_batch`]). Requests go out one at a
//! time, in order; the call succeeds (and the shipper may move the checkpoints) only when
//! every request of every batch taken has succeeded.
//!
//! Failures:
//! - throttling, 5xx and connection errors are retried by the SDK (standard mode:
//!   exponential backoff with jitter, `max_attempts`), then the call fails and the shipper
//!   retries with its own backoff. The requests still to send are kept: a retry of the same
//!   batches resumes at the first request not acknowledged, so a request the service took
//!   is not sent again (unless its answer was lost: at-least-once);
//! - `ResourceNotFoundException` (the group or stream was deleted, or a test server was
//!   restarted): the group and stream are created again and the request is sent again;
//! - `InvalidParameterException` means a limit we encode was broken, a bug: the request is
//!   dropped, its events counted as rejected, and an error logged, so one bad request cannot
//!   stop the pipeline forever;
//! - events the service refuses in a successful answer (`rejectedLogEventsInfo`: too old,
//!   too new, expired) are counted as rejected: they are lost.
//!
//! Groups and streams that exist are remembered (bounded; forgotten all at once when full,
//! then found again by a harmless `ResourceAlreadyExistsException`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_cloudwatchlogs::Client;
use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use aws_smithy_types::error::display::DisplayErrorContext;
use futures_util::future::BoxFuture;
use tracing::{debug, error, info, warn};

use super::cloudwatch_batch::{
    self, BuildStats, Event, InputRecord, Limits, Request, events_from_records,
    requests_from_events,
};
use super::naming::{HostFacts, NameContext, Template, sanitize_log_group, sanitize_log_stream};
use super::{Sink, SinkError};
use crate::batch::{Batch, SourceKind};
use crate::config::CloudWatchSinkConfig;
use crate::internal_events::cloudwatch as events;
use crate::tail::StdStream;

/// Groups and streams remembered as existing at most; past this the memory is cleared.
const MAX_KNOWN: usize = 10_000;

/// Errors of the CloudWatch Logs sink. The SDK's error is kept as text rendered with
/// [`DisplayErrorContext`] (its `Display` alone says only "service error").
#[derive(Debug, thiserror::Error)]
pub enum CloudWatchError {
    /// A template in the configuration does not parse.
    #[error("invalid sinks.cloudwatch.{key}")]
    Template {
        /// The key.
        key: &'static str,
        /// The cause.
        #[source]
        source: super::naming::NamingError,
    },
    /// CreateLogGroup failed.
    #[error("CreateLogGroup {group} failed: {detail}")]
    CreateLogGroup {
        /// The group.
        group: String,
        /// The SDK's error with its causes.
        detail: String,
    },
    /// PutRetentionPolicy failed.
    #[error("PutRetentionPolicy {group} failed: {detail}")]
    PutRetentionPolicy {
        /// The group.
        group: String,
        /// The SDK's error with its causes.
        detail: String,
    },
    /// CreateLogStream failed.
    #[error("CreateLogStream {group} {stream} failed: {detail}")]
    CreateLogStream {
        /// The group.
        group: String,
        /// The stream.
        stream: String,
        /// The SDK's error with its causes.
        detail: String,
    },
    /// PutLogEvents failed.
    #[error("PutLogEvents {group} {stream} ({events} events) failed: {detail}")]
    PutLogEvents {
        /// The group.
        group: String,
        /// The stream.
        stream: String,
        /// Events in the request.
        events: usize,
        /// The SDK's error with its causes.
        detail: String,
    },
}

/// A log group and log stream.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Destination {
    /// The log group.
    pub group: Arc<str>,
    /// The log stream.
    pub stream: Arc<str>,
}

/// Validated settings.
#[derive(Clone, Debug)]
pub struct CloudWatchSettings {
    log_group: Template,
    log_stream: Template,
    create_group: bool,
    retention_days: Option<u32>,
    limits: Limits,
    host: HostFacts,
}

impl CloudWatchSettings {
    /// From the configuration.
    ///
    /// # Errors
    /// A template that does not parse.
    pub fn try_from_config(config: &CloudWatchSinkConfig) -> Result<Self, CloudWatchError> {
        let parse = |key, text: &str| {
            Template::parse(text).map_err(|source| CloudWatchError::Template { key, source })
        };
        Ok(Self {
            log_group: parse("log_group", &config.log_group)?,
            log_stream: parse("log_stream", &config.log_stream)?,
            create_group: config.create_group,
            retention_days: config.retention_days,
            limits: Limits::with(config.max_event_bytes, config.retention_days),
            host: HostFacts::default(),
        })
    }
}

/// Requests built for a set of batches and not yet all acknowledged.
#[derive(Debug)]
struct Inflight {
    /// Which batches (source key and end offset of each): a retry of the same batches
    /// resumes here; any other call starts over.
    key: Vec<(String, u64)>,
    /// The requests still to send, first to go first.
    requests: VecDeque<(Destination, Request)>,
}

/// The CloudWatch Logs sink.
pub struct CloudWatchLogsSink {
    client: Client,
    settings: CloudWatchSettings,
    known_groups: HashSet<Arc<str>>,
    known_streams: HashSet<Destination>,
    inflight: Option<Inflight>,
    buffer: Option<super::BufferSettings>,
}

impl std::fmt::Debug for CloudWatchLogsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudWatchLogsSink")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// How long the instance metadata service may take, in all, at start.
const IMDS_BUDGET: Duration = Duration::from_secs(3);

/// The host's instance id and availability zone from IMDSv2 (`endpoint`: another address, for
/// tests), within [`IMDS_BUDGET`]; none off EC2 or on any error (logged once): names then say
/// `unknown`. Asked only when a template uses them and `AWS_EC2_METADATA_DISABLED` is not
/// `true`.
pub async fn host_facts(endpoint: Option<&str>) -> HostFacts {
    let mut builder = aws_config::imds::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .read_timeout(Duration::from_secs(1))
        .max_attempts(1);
    if let Some(url) = endpoint {
        builder = match builder.endpoint(url) {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "Bad instance metadata endpoint; host facts unknown.");
                return HostFacts::default();
            }
        };
    }
    let client = builder.build();
    let fetch = async {
        let get = |path: &'static str| {
            let client = client.clone();
            async move {
                client
                    .get(path)
                    .await
                    .map(|v| v.as_ref().trim().to_owned())
                    .map_err(|e| DisplayErrorContext(&e).to_string())
            }
        };
        let id = get("/latest/meta-data/instance-id").await?;
        let az = get("/latest/meta-data/placement/availability-zone").await?;
        Ok::<_, String>(HostFacts {
            instance_id: Some(id),
            availability_zone: Some(az),
        })
    };
    match tokio::time::timeout(IMDS_BUDGET, fetch).await {
        Ok(Ok(facts)) => facts,
        Ok(Err(e)) => {
            warn!(error = %e, "No instance metadata (not on EC2?); {{instance_id}} and {{availability_zone}} render as unknown.");
            HostFacts::default()
        }
        Err(_) => {
            warn!(
                "Instance metadata did not answer in time; {{instance_id}} and {{availability_zone}} render as unknown."
            );
            HostFacts::default()
        }
    }
}

/// The batches' key for [`Inflight`].
fn key_of(batches: &[Arc<Batch>]) -> Vec<(String, u64)> {
    batches
        .iter()
        .map(|b| (b.ack.source.clone(), b.ack.checkpoint.offset))
        .collect()
}

impl CloudWatchLogsSink {
    /// A sink from the configuration: the SDK's default credential chain, with the region,
    /// endpoint, timeout and attempts configured.
    ///
    /// # Errors
    /// A template that does not parse.
    pub async fn build(config: &CloudWatchSinkConfig) -> Result<Self, CloudWatchError> {
        let mut settings = CloudWatchSettings::try_from_config(config)?;
        let imds_disabled = std::env::var("AWS_EC2_METADATA_DISABLED")
            .is_ok_and(|v| v.eq_ignore_ascii_case("true"));
        if (settings.log_group.uses_host() || settings.log_stream.uses_host()) && !imds_disabled {
            settings.host = host_facts(None).await;
        }
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::standard().with_max_attempts(config.max_attempts))
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(config.request_timeout)
                    .build(),
            );
        if let Some(region) = &config.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(url) = &config.endpoint_url {
            loader = loader.endpoint_url(url.clone());
        }
        let sdk = loader.load().await;
        info!(
            region = ?sdk.region().map(|r| r.as_ref().to_owned()),
            endpoint = ?config.endpoint_url,
            log_group = %config.log_group,
            log_stream = %config.log_stream,
            "CloudWatch Logs sink enabled."
        );
        Ok(Self::with_client(Client::new(&sdk), settings))
    }

    /// A sink over a ready client.
    pub fn with_client(client: Client, settings: CloudWatchSettings) -> Self {
        Self {
            client,
            settings,
            known_groups: HashSet::new(),
            known_streams: HashSet::new(),
            inflight: None,
            buffer: None,
        }
    }

    /// Gives the sink a disk buffer ([`super::spill`]).
    pub fn with_buffer(mut self, buffer: super::BufferSettings) -> Self {
        self.buffer = Some(buffer);
        self
    }

    /// Builds the requests of `batches`: records grouped by destination (in order of first
    /// appearance), each destination's events sorted and cut within the limits.
    fn build_requests(&self, batches: &[Arc<Batch>]) -> VecDeque<(Destination, Request)> {
        let now = cloudwatch_batch::now_ms();
        let limits = &self.settings.limits;
        let mut stats = BuildStats::default();
        let mut order: Vec<Destination> = Vec::new();
        let mut per_dest: HashMap<Destination, Vec<Event>> = HashMap::new();
        let by_stream =
            self.settings.log_group.uses_stream() || self.settings.log_stream.uses_stream();
        for batch in batches {
            let name = |stream: Option<StdStream>| {
                let cx = NameContext {
                    identity: &batch.identity,
                    kind: &batch.source.kind,
                    stream,
                    host: &self.settings.host,
                };
                Destination {
                    group: sanitize_log_group(&self.settings.log_group.render(&cx)).into(),
                    stream: sanitize_log_stream(&self.settings.log_stream.render(&cx)).into(),
                }
            };
            let split = by_stream && batch.source.kind == SourceKind::ContainerOutput;
            let streams: &[Option<StdStream>] = if split {
                &[Some(StdStream::Stdout), Some(StdStream::Stderr)]
            } else {
                &[None]
            };
            for &stream in streams {
                let dest = name(stream);
                let records = batch
                    .records
                    .iter()
                    .filter(|r| {
                        !split
                            || r.stream.unwrap_or(StdStream::Stdout)
                                == stream.unwrap_or(StdStream::Stdout)
                    })
                    .map(|r| InputRecord {
                        time: r.time,
                        message: r.message,
                        continued: r.split,
                    });
                let events = per_dest.entry(dest.clone()).or_insert_with(|| {
                    order.push(dest);
                    Vec::new()
                });
                events_from_records(records, now, limits, &mut stats, events);
            }
        }
        events::CloudWatchEventsPrepared { stats: &stats }.emit();
        let mut out = VecDeque::new();
        for dest in order {
            let evs = per_dest.remove(&dest).unwrap_or_default();
            for r in requests_from_events(evs, limits) {
                out.push_back((dest.clone(), r));
            }
        }
        out
    }

    /// Makes sure the group and stream exist (once per process, unless forgotten).
    async fn ensure(&mut self, dest: &Destination) -> Result<(), CloudWatchError> {
        if self.known_streams.contains(dest) {
            return Ok(());
        }
        if self.known_groups.len() >= MAX_KNOWN {
            self.known_groups.clear();
        }
        if self.known_streams.len() >= MAX_KNOWN {
            self.known_streams.clear();
        }
        if self.settings.create_group && !self.known_groups.contains(&dest.group) {
            match self
                .client
                .create_log_group()
                .log_group_name(dest.group.as_ref())
                .send()
                .await
            {
                Ok(_) => {
                    events::CloudWatchResourceCreated {
                        kind: "log_group",
                        name: &dest.group,
                    }
                    .emit();
                    if let Some(days) = self.settings.retention_days {
                        self.client
                            .put_retention_policy()
                            .log_group_name(dest.group.as_ref())
                            .retention_in_days(days as i32)
                            .send()
                            .await
                            .map_err(|e| CloudWatchError::PutRetentionPolicy {
                                group: dest.group.to_string(),
                                detail: DisplayErrorContext(&e).to_string(),
                            })?;
                    }
                }
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_resource_already_exists_exception()) => {}
                Err(e) => {
                    return Err(CloudWatchError::CreateLogGroup {
                        group: dest.group.to_string(),
                        detail: DisplayErrorContext(&e).to_string(),
                    });
                }
            }
            self.known_groups.insert(dest.group.clone());
        }
        match self
            .client
            .create_log_stream()
            .log_group_name(dest.group.as_ref())
            .log_stream_name(dest.stream.as_ref())
            .send()
            .await
        {
            Ok(_) => events::CloudWatchResourceCreated {
                kind: "log_stream",
                name: &dest.stream,
            }
            .emit(),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_already_exists_exception()) => {}
            Err(e) => {
                // The group may have gone since we saw it: look again next time.
                self.known_groups.remove(&dest.group);
                return Err(CloudWatchError::CreateLogStream {
                    group: dest.group.to_string(),
                    stream: dest.stream.to_string(),
                    detail: DisplayErrorContext(&e).to_string(),
                });
            }
        }
        self.known_streams.insert(dest.clone());
        Ok(())
    }

    /// Sends one request. `Ok(false)`: the group or stream does not exist (forgotten here).
    async fn put(
        &mut self,
        dest: &Destination,
        request: &Request,
    ) -> Result<bool, CloudWatchError> {
        let mut input = Vec::with_capacity(request.events.len());
        for e in &request.events {
            let event = InputLogEvent::builder()
                .timestamp(e.timestamp)
                .message(e.message.clone())
                .build()
                .expect("timestamp and message are set");
            input.push(event);
        }
        let result = self
            .client
            .put_log_events()
            .log_group_name(dest.group.as_ref())
            .log_stream_name(dest.stream.as_ref())
            .set_log_events(Some(input))
            .send()
            .await;
        match result {
            Ok(out) => {
                let n = request.events.len() as i64;
                let mut rejected = 0;
                if let Some(info) = out.rejected_log_events_info() {
                    let old = info
                        .too_old_log_event_end_index()
                        .max(info.expired_log_event_end_index())
                        .map_or(0, |i| i64::from(i) + 1);
                    let new = info
                        .too_new_log_event_start_index()
                        .map_or(0, |i| n - i64::from(i));
                    rejected = (old + new).clamp(0, n) as u64;
                }
                events::CloudWatchRequestSent {
                    events: request.events.len() as u64,
                    bytes: request.bytes as u64,
                    rejected,
                    group: &dest.group,
                    stream: &dest.stream,
                }
                .emit();
                Ok(true)
            }
            Err(e) => {
                let service = e.as_service_error();
                if service.is_some_and(|s| s.is_resource_not_found_exception()) {
                    debug!(group = %dest.group, stream = %dest.stream, "Log group or stream gone; creating it again.");
                    self.known_streams.remove(dest);
                    self.known_groups.remove(&dest.group);
                    return Ok(false);
                }
                let err = CloudWatchError::PutLogEvents {
                    group: dest.group.to_string(),
                    stream: dest.stream.to_string(),
                    events: request.events.len(),
                    detail: DisplayErrorContext(&e).to_string(),
                };
                if service.is_some_and(|s| s.is_invalid_parameter_exception()) {
                    error!(error = %err, "CloudWatch refused a request as invalid; this is a bug. Its events are dropped and counted.");
                    events::CloudWatchEventsRejected {
                        events: request.events.len() as u64,
                    }
                    .emit();
                    return Ok(true);
                }
                Err(err)
            }
        }
    }

    /// Sends `batches` (all of them): resumes the requests of an earlier failed call on the
    /// same batches, or builds them.
    async fn send_all(&mut self, batches: &[Arc<Batch>]) -> Result<(), CloudWatchError> {
        let key = key_of(batches);
        let mut inflight = match self.inflight.take() {
            Some(i) if i.key == key => i,
            _ => Inflight {
                requests: self.build_requests(batches),
                key,
            },
        };
        let result = self.send_requests(&mut inflight.requests).await;
        if result.is_err() {
            self.inflight = Some(inflight);
        }
        result
    }

    async fn send_requests(
        &mut self,
        requests: &mut VecDeque<(Destination, Request)>,
    ) -> Result<(), CloudWatchError> {
        while let Some((dest, request)) = requests.front_mut() {
            let mut stats = BuildStats::default();
            cloudwatch_batch::reclamp(
                request,
                cloudwatch_batch::now_ms(),
                &self.settings.limits,
                &mut stats,
            );
            if stats != BuildStats::default() {
                events::CloudWatchEventsPrepared { stats: &stats }.emit();
            }
            let (dest, request) = (dest.clone(), std::mem::take(request));
            let sent = async {
                self.ensure(&dest).await?;
                if self.put(&dest, &request).await? {
                    return Ok(());
                }
                // Gone: create again and send once more; a second miss fails the call.
                self.ensure(&dest).await?;
                if self.put(&dest, &request).await? {
                    return Ok(());
                }
                Err(CloudWatchError::PutLogEvents {
                    group: dest.group.to_string(),
                    stream: dest.stream.to_string(),
                    events: request.events.len(),
                    detail: "ResourceNotFoundException right after creating it".to_owned(),
                })
            }
            .await;
            match sent {
                Ok(()) => {
                    requests.pop_front();
                }
                Err(e) => {
                    events::CloudWatchRequestFailed.emit();
                    if let Some(front) = requests.front_mut() {
                        front.1 = request;
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

impl Sink for CloudWatchLogsSink {
    fn name(&self) -> &'static str {
        "cloudwatch"
    }

    fn buffer(&self) -> Option<super::BufferSettings> {
        self.buffer.clone()
    }

    fn send_batch<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            self.send_all(&[Arc::new(batch.clone())])
                .await
                .map_err(SinkError::from)
        })
    }

    fn send_batches<'a>(
        &'a mut self,
        batches: &'a [Arc<Batch>],
    ) -> BoxFuture<'a, Result<usize, SinkError>> {
        Box::pin(async move {
            self.send_all(batches).await?;
            Ok(batches.len())
        })
    }

    fn sync(&mut self) -> BoxFuture<'_, Result<(), SinkError>> {
        // Every acknowledged request is already durable at the service.
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::Ordering;

    use std::time::Instant;

    use aws_sdk_cloudwatchlogs::config::{BehaviorVersion, Credentials, Region};
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    use super::*;
    use crate::control::testing::test_batch;

    /// What the scripted endpoint saw: per PutLogEvents, the number of events and the first
    /// message; and which calls were made.
    #[derive(Default)]
    struct Seen {
        calls: Vec<String>,
        puts: Vec<(usize, String)>,
    }

    /// A CloudWatch Logs endpoint speaking the JSON protocol over HTTP/1.1 that answers the
    /// PutLogEvents calls numbered in `fail` (1-based) with a 500 and the others with 200,
    /// marking the first event of every accepted request as too old when `reject_first`.
    async fn scripted_endpoint(fail: Vec<usize>, reject_first: bool) -> (String, Arc<Mutex<Seen>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s = seen.clone();
        tokio::spawn(async move {
            let puts = Arc::new(Mutex::new(0usize));
            loop {
                let (conn, _) = listener.accept().await.unwrap();
                let (s, fail, puts) = (s.clone(), fail.clone(), puts.clone());
                tokio::spawn(async move {
                    let (r, mut w) = conn.into_split();
                    let mut r = BufReader::new(r);
                    loop {
                        let mut target = String::new();
                        let mut len = 0usize;
                        let mut line = String::new();
                        loop {
                            line.clear();
                            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            let l = line.trim_end().to_ascii_lowercase();
                            if l.is_empty() {
                                break;
                            }
                            if let Some(v) = l.strip_prefix("x-amz-target:") {
                                target = v.trim().to_owned();
                            }
                            if let Some(v) = l.strip_prefix("content-length:") {
                                len = v.trim().parse().unwrap();
                            }
                        }
                        let mut body = vec![0; len];
                        r.read_exact(&mut body).await.unwrap();
                        let action = target.rsplit('.').next().unwrap_or("").to_owned();
                        let (status, answer) = if action == "putlogevents" {
                            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                            let events = v["logEvents"].as_array().unwrap();
                            let n = {
                                let mut p = puts.lock().unwrap();
                                *p += 1;
                                *p
                            };
                            if fail.contains(&n) {
                                (
                                    500,
                                    r#"{"__type":"ServiceUnavailableException","message":"down"}"#
                                        .to_owned(),
                                )
                            } else {
                                s.lock().unwrap().puts.push((
                                    events.len(),
                                    events[0]["message"].as_str().unwrap().to_owned(),
                                ));
                                if reject_first {
                                    (
                                        200,
                                        r#"{"rejectedLogEventsInfo":{"tooOldLogEventEndIndex":0}}"#
                                            .to_owned(),
                                    )
                                } else {
                                    (200, "{}".to_owned())
                                }
                            }
                        } else {
                            (200, "{}".to_owned())
                        };
                        s.lock().unwrap().calls.push(action);
                        let reply = format!(
                            "HTTP/1.1 {status} X\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n{answer}",
                            answer.len()
                        );
                        if w.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (url, seen)
    }

    fn sink(url: &str) -> CloudWatchLogsSink {
        let conf = aws_sdk_cloudwatchlogs::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(url)
            .credentials_provider(Credentials::new("a", "b", None, None, "test"))
            .retry_config(RetryConfig::standard().with_max_attempts(1))
            .build();
        let settings = CloudWatchSettings::try_from_config(&CloudWatchSinkConfig {
            enabled: true,
            ..CloudWatchSinkConfig::default()
        })
        .unwrap();
        CloudWatchLogsSink::with_client(Client::from_conf(conf), settings)
    }

    /// 25,000 lines are three requests; the second fails once. The retry of the same batches
    /// resumes at the second request: the first is not sent again, and every line is taken
    /// exactly once; the group and stream were created once.
    #[tokio::test]
    async fn a_retry_resumes_at_the_first_request_not_acknowledged() {
        let (url, seen) = scripted_endpoint(vec![2], false).await;
        let mut sink = sink(&url);
        let lines: Vec<String> = (0..25_000).map(|i| format!("line {i}")).collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let batches = vec![
            Arc::new(test_batch(&refs[..12_000], 1)),
            Arc::new(test_batch(&refs[12_000..], 2)),
        ];
        assert!(sink.send_batches(&batches).await.is_err());
        assert_eq!(sink.send_batches(&batches).await.unwrap(), 2);
        {
            let seen = seen.lock().unwrap();
            let puts: Vec<(usize, &str)> =
                seen.puts.iter().map(|(n, m)| (*n, m.as_str())).collect();
            assert_eq!(
                puts,
                [
                    (10_000, "line 0"),
                    (10_000, "line 10000"),
                    (5_000, "line 20000")
                ]
            );
            let creates = |a: &str| seen.calls.iter().filter(|c| *c == a).count();
            assert_eq!(
                (creates("createloggroup"), creates("createlogstream")),
                (1, 1)
            );
        }
        // Other batches start over.
        let other = vec![Arc::new(test_batch(&["again"], 3))];
        assert_eq!(sink.send_batches(&other).await.unwrap(), 1);
    }

    /// A fake IMDSv2 (token, then two paths) gives the host's facts; a closed port gives
    /// none, within the budget.
    #[tokio::test]
    async fn host_facts_come_from_imdsv2() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            loop {
                let (conn, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let (r, mut w) = conn.into_split();
                    let mut r = BufReader::new(r);
                    loop {
                        let mut request = String::new();
                        if r.read_line(&mut request).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let mut token = false;
                        let mut line = String::new();
                        loop {
                            line.clear();
                            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            if line.trim().is_empty() {
                                break;
                            }
                            token |= line
                                .to_ascii_lowercase()
                                .starts_with("x-aws-ec2-metadata-token: tok");
                        }
                        let (status, body) = match request.split_whitespace().nth(1).unwrap_or("") {
                            "/latest/api/token" if request.starts_with("PUT") => (200, "tok"),
                            _ if !token => (401, ""),
                            "/latest/meta-data/instance-id" => (200, "i-0123456789"),
                            "/latest/meta-data/placement/availability-zone" => (200, "eu-west-1b"),
                            _ => (404, ""),
                        };
                        let reply = format!(
                            "HTTP/1.1 {status} X\r\nx-aws-ec2-metadata-token-ttl-seconds: 21600\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if w.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let facts = host_facts(Some(&url)).await;
        assert_eq!(
            facts,
            HostFacts {
                instance_id: Some("i-0123456789".to_owned()),
                availability_zone: Some("eu-west-1b".to_owned()),
            }
        );
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let started = Instant::now();
        assert_eq!(host_facts(Some(&url)).await, HostFacts::default());
        assert!(started.elapsed() <= IMDS_BUDGET + Duration::from_secs(1));
    }

    /// Events the service lists in `rejectedLogEventsInfo` are counted as lost.
    #[tokio::test]
    async fn rejected_events_are_counted() {
        let (url, _seen) = scripted_endpoint(vec![], true).await;
        let mut sink = sink(&url);
        let before = events::COUNTERS.events_rejected.load(Ordering::Relaxed);
        let batches = vec![Arc::new(test_batch(&["a", "b"], 1))];
        assert_eq!(sink.send_batches(&batches).await.unwrap(), 1);
        assert!(events::COUNTERS.events_rejected.load(Ordering::Relaxed) > before);
    }
}
