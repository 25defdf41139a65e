//! The control API's metrics answers: `GET /v1/metrics/tasks/{task id or ARN}`,
//! `GET /v1/metrics/containers/{container id}` (a container outside any task) and
//! `GET /v1/metrics/unattributed` (see `crate::control`).

use serde::Serialize;

use super::UNATTRIBUTED;
use crate::control::percent_decode;
use crate::identify::{ContainerId, TaskArn, TaskId};
use crate::state::{MetricOwnerRecord, MetricPathRecord, StateError, Store};

/// One owner's metrics.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OwnerMetrics {
    /// The owner (task id or `unattributed`), counters and identity.
    #[serde(flatten)]
    pub record: MetricOwnerRecord,
    /// First sample, RFC 3339.
    pub first_seen: String,
    /// Last sample or loss, RFC 3339.
    pub last_seen: String,
    /// Every path, latest value first.
    pub metrics: Vec<MetricPathRecord>,
}

/// The owner key a query names: a task id, a task ARN, or `unattributed`; `None` when it is
/// none of them.
pub fn owner_of_query(q: &str) -> Option<String> {
    if q == UNATTRIBUTED {
        return Some(q.to_owned());
    }
    TaskArn::parse(q)
        .map(|a| a.task_id().as_str().to_owned())
        .or_else(|| TaskId::parse(q).map(|t| t.as_str().to_owned()))
}

/// The owner key a request path names (`/v1/metrics/...`); `None` when it names none.
pub fn owner_of_path(path: &str) -> Option<String> {
    if path == "/v1/metrics/unattributed" {
        return Some(UNATTRIBUTED.to_owned());
    }
    if let Some(q) = path.strip_prefix("/v1/metrics/tasks/") {
        return owner_of_query(&percent_decode(q)?).filter(|o| o != UNATTRIBUTED);
    }
    let id = ContainerId::parse(path.strip_prefix("/v1/metrics/containers/")?)?;
    Some(format!("container:{id}"))
}

/// The metrics of `owner`, with each path's history when `history`.
///
/// # Errors
/// A failed query.
pub fn owner_metrics(
    store: &Store,
    owner: &str,
    history: bool,
) -> Result<Option<OwnerMetrics>, StateError> {
    let Some(record) = store.metric_owner(owner)? else {
        return Ok(None);
    };
    let metrics = store.metric_paths(Some(owner), None, history)?;
    Ok(Some(OwnerMetrics {
        first_seen: ms_to_rfc3339(record.first_ms),
        last_seen: ms_to_rfc3339(record.last_ms),
        record,
        metrics,
    }))
}

fn ms_to_rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_name_owners() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(owner_of_query(id).as_deref(), Some(id));
        let arn = format!("arn:aws:ecs:us-east-1:123456789012:task/prod/{id}");
        assert_eq!(owner_of_query(&arn).as_deref(), Some(id));
        assert_eq!(
            owner_of_query("unattributed").as_deref(),
            Some("unattributed")
        );
        assert_eq!(owner_of_query("web"), None);
        let paths = [
            (format!("/v1/metrics/tasks/{id}"), Some(id.to_owned())),
            (
                format!("/v1/metrics/tasks/arn%3Aaws%3Aecs%3Aus-east-1%3A1%3Atask%2Fc%2F{id}"),
                Some(id.to_owned()),
            ),
            (
                "/v1/metrics/unattributed".to_owned(),
                Some("unattributed".to_owned()),
            ),
            ("/v1/metrics/tasks/unattributed".to_owned(), None),
            (
                format!("/v1/metrics/containers/{}", "a".repeat(64)),
                Some(format!("container:{}", "a".repeat(64))),
            ),
            ("/v1/metrics/containers/web".to_owned(), None),
            ("/v1/metrics/other".to_owned(), None),
        ];
        for (path, want) in paths {
            assert_eq!(owner_of_path(&path), want, "{path}");
        }
    }
}
