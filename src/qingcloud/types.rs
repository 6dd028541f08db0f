//! Wire types of the two actions we use, shared by the client (which reads them) and the
//! simulator (which writes them). Reading is tolerant: unknown fields are ignored, missing (or
//! `null`) optional ones take defaults, unknown job statuses are kept rather than refused.

use serde::{Deserialize, Serialize};

/// The `service_params` of `del_user`. Always serialized with serde_json, so no user or host
/// value can change the JSON's structure. Field order gives the compact form the docs show:
/// `{"host":"%","user":"u1"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelUserParams {
    pub host: String,
    pub user: String,
}

impl DelUserParams {
    pub fn new(user: &str, host: &str) -> Self {
        Self { host: host.to_owned(), user: user.to_owned() }
    }

    /// The compact JSON text sent (and signed) as `service_params`.
    pub fn to_json(&self) -> String {
        // Serializing two strings cannot fail.
        serde_json::to_string(self).expect("two strings always serialize")
    }
}

/// Status of an asynchronous job.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JobStatus {
    Pending,
    Working,
    Successful,
    Failed,
    /// Listed only by the Go SDK; terminal and not a success.
    DoneWithFailure,
    /// Anything else the API may say: terminal and not a success.
    Unknown(String),
}

impl JobStatus {
    pub fn parse(s: &str) -> Self {
        match s {
            "pending" => JobStatus::Pending,
            "working" => JobStatus::Working,
            "successful" => JobStatus::Successful,
            "failed" => JobStatus::Failed,
            "done with failure" => JobStatus::DoneWithFailure,
            other => JobStatus::Unknown(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Working => "working",
            JobStatus::Successful => "successful",
            JobStatus::Failed => "failed",
            JobStatus::DoneWithFailure => "done with failure",
            JobStatus::Unknown(s) => s,
        }
    }

    /// Still running (`pending` or `working`).
    pub fn is_running(&self) -> bool {
        matches!(self, JobStatus::Pending | JobStatus::Working)
    }

    pub fn is_success(&self) -> bool {
        matches!(self, JobStatus::Successful)
    }
}

impl Serialize for JobStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for JobStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(JobStatus::parse(&s))
    }
}

/// One entry of `job_set`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub job_id: String,
    #[serde(default, deserialize_with = "string_or_null")]
    pub job_action: String,
    pub status: JobStatus,
    #[serde(default, deserialize_with = "string_or_null")]
    pub create_time: String,
    #[serde(default, deserialize_with = "string_or_null")]
    pub status_time: String,
    /// Affected resources, separated by spaces.
    #[serde(default, deserialize_with = "string_or_null")]
    pub resource_ids: String,
    #[serde(default, deserialize_with = "string_or_null")]
    pub owner: String,
    #[serde(default, deserialize_with = "string_or_null")]
    pub error_codes: String,
    /// JSON of the original request, as a string.
    #[serde(default, deserialize_with = "string_or_null")]
    pub directive: String,
}

/// What a `RunClusterCustomService` job was asked to do, read back from its `directive`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectiveTarget {
    pub cluster: String,
    pub service: String,
    /// `service_params` parsed as del_user's, when it is that shape.
    pub params: Option<DelUserParams>,
}

impl Job {
    pub fn resource_ids(&self) -> impl Iterator<Item = &str> {
        self.resource_ids.split_whitespace()
    }

    /// Parse `directive` (JSON inside a string). `service_params` may itself be a JSON string
    /// or an object; both are accepted.
    pub fn directive_target(&self) -> Option<DirectiveTarget> {
        let v: serde_json::Value = serde_json::from_str(&self.directive).ok()?;
        let cluster = v.get("cluster").and_then(|c| c.as_str()).unwrap_or_default().to_owned();
        let service = v.get("service").and_then(|c| c.as_str()).unwrap_or_default().to_owned();
        let params = match v.get("service_params") {
            Some(serde_json::Value::String(s)) => serde_json::from_str(s).ok(),
            Some(obj @ serde_json::Value::Object(_)) => serde_json::from_value(obj.clone()).ok(),
            _ => None,
        };
        Some(DirectiveTarget { cluster, service, params })
    }

    pub fn create_time(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        crate::qingcloud::signer::parse_time_stamp(&self.create_time)
    }

    /// For a job that has ended: `status_time` (its last status change, the end) less
    /// `create_time`, on the API's clock and in the whole seconds its time stamps carry. `None`
    /// while it runs, or when either time is missing, unreadable or out of order.
    pub fn took(&self) -> Option<std::time::Duration> {
        (self.ended_at()? - self.create_time()?).to_std().ok()
    }

    /// For a job that has ended: its `status_time` (the API's clock, whole seconds). `None`
    /// while it runs, or when the time is missing or unreadable.
    pub fn ended_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        if self.status.is_running() {
            return None;
        }
        crate::qingcloud::signer::parse_time_stamp(&self.status_time)
    }
}

/// The body of every response: `ret_code` and, on errors, `message`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    #[serde(default, deserialize_with = "string_or_null")]
    pub action: String,
    pub ret_code: i64,
    #[serde(default, deserialize_with = "string_or_null", skip_serializing_if = "String::is_empty")]
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunClusterCustomServiceResponse {
    #[serde(default, deserialize_with = "string_or_null")]
    pub action: String,
    pub ret_code: i64,
    #[serde(default, deserialize_with = "string_or_null", skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, deserialize_with = "string_or_null")]
    pub job_id: String,
    #[serde(default, deserialize_with = "string_or_null")]
    pub service: String,
    #[serde(default, deserialize_with = "string_or_null")]
    pub role: String,
    #[serde(default, deserialize_with = "string_or_null")]
    pub cluster_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeJobsResponse {
    #[serde(default, deserialize_with = "string_or_null")]
    pub action: String,
    pub ret_code: i64,
    #[serde(default, deserialize_with = "string_or_null", skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default)]
    pub total_count: u64,
    #[serde(default)]
    pub job_set: Vec<Job>,
}

/// One cluster in a `DescribeClusters` answer (AppCenter). The answer has no zone: the zone is
/// the one asked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    #[serde(default, deserialize_with = "string_or_null")]
    pub cluster_id: String,
    #[serde(default, deserialize_with = "string_or_null")]
    pub name: String,
    #[serde(default, deserialize_with = "string_or_null")]
    pub app_id: String,
    #[serde(default, deserialize_with = "string_or_null")]
    pub app_version: String,
    #[serde(default, deserialize_with = "string_or_null")]
    pub status: String,
    #[serde(default, deserialize_with = "string_or_null")]
    pub transition_status: String,
    /// The tags the cluster carries, when the answer lists them (absent or `null`: none).
    #[serde(default, deserialize_with = "vec_or_null", skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<TagInfo>,
}

/// A tag: in a `DescribeTags` answer, or on a resource.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagInfo {
    #[serde(default, deserialize_with = "string_or_null")]
    pub tag_id: String,
    #[serde(default, deserialize_with = "string_or_null")]
    pub tag_name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeTagsResponse {
    #[serde(default, deserialize_with = "string_or_null")]
    pub action: String,
    pub ret_code: i64,
    #[serde(default, deserialize_with = "string_or_null", skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default)]
    pub total_count: u64,
    #[serde(default, deserialize_with = "vec_or_null")]
    pub tag_set: Vec<TagInfo>,
}

/// An optional list: absent or `null` is empty.
fn vec_or_null<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeClustersResponse {
    #[serde(default, deserialize_with = "string_or_null")]
    pub action: String,
    pub ret_code: i64,
    #[serde(default, deserialize_with = "string_or_null", skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default)]
    pub total_count: u64,
    #[serde(default)]
    pub cluster_set: Vec<ClusterInfo>,
}

/// An optional text field: absent or `null` is the empty string.
fn string_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// Well-known ret_codes (reference §5.1).
pub mod ret {
    pub const OK: i64 = 0;
    pub const MALFORMED: i64 = 1100;
    pub const BAD_REQUEST: i64 = 1101;
    pub const AUTH_FAILED: i64 = 1200;
    pub const EXPIRED: i64 = 1300;
    pub const ACCESS_DENIED: i64 = 1400;
    pub const NOT_FOUND: i64 = 2100;
    pub const QUOTA_EXCEEDED: i64 = 2500;
    pub const INTERNAL: i64 = 5000;
    pub const BUSY: i64 = 5100;
    pub const UPDATING: i64 = 5300;
}

/// The service and role this tool runs.
pub const DEL_USER: &str = "del_user";
pub const ROLE_MAININSTANCE: &str = "maininstance";
pub const RUN_CLUSTER_CUSTOM_SERVICE: &str = "RunClusterCustomService";
pub const DESCRIBE_JOBS: &str = "DescribeJobs";
pub const DESCRIBE_CLUSTERS: &str = "DescribeClusters";
pub const DESCRIBE_TAGS: &str = "DescribeTags";
/// The MySQL Plus application id (reference §12): the only clusters this tool works on.
pub const MYSQL_PLUS_APP_ID: &str = "app-00r26u27";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn del_user_params_are_compact_and_ordered() {
        assert_eq!(DelUserParams::new("u1", "%").to_json(), r#"{"host":"%","user":"u1"}"#);
        let tricky = DelUserParams::new(r#"a"b\c"#, "%").to_json();
        let back: DelUserParams = serde_json::from_str(&tricky).unwrap();
        assert_eq!(back.user, r#"a"b\c"#);
    }

    #[test]
    fn jobs_parse_tolerantly() {
        let body = r#"{"action":"DescribeJobsResponse","total_count":2,"ret_code":0,"extra":1,
          "job_set":[{"job_id":"j-1","status":"done with failure","resource_ids":"cl-a  cl-b","x":true,
            "directive":"{\"cluster\":\"cl-a\",\"service\":\"del_user\",\"service_params\":\"{\\\"host\\\":\\\"%\\\",\\\"user\\\":\\\"u1\\\"}\"}"},
          {"job_id":"j-2","status":"mystery","create_time":"2024-05-01T08:57:03Z",
            "directive":"{\"cluster\":\"cl-b\",\"service\":\"del_user\",\"service_params\":{\"host\":\"%\",\"user\":\"u2\"}}"}]}"#;
        let r: DescribeJobsResponse = serde_json::from_str(body).unwrap();
        assert_eq!(r.job_set[0].status, JobStatus::DoneWithFailure);
        assert!(!r.job_set[0].status.is_running() && !r.job_set[0].status.is_success());
        assert_eq!(r.job_set[0].resource_ids().collect::<Vec<_>>(), ["cl-a", "cl-b"]);
        let t = r.job_set[0].directive_target().unwrap();
        assert_eq!((t.cluster.as_str(), t.params.unwrap().user.as_str()), ("cl-a", "u1"));
        assert_eq!(r.job_set[1].status, JobStatus::Unknown("mystery".into()));
        assert_eq!(r.job_set[1].directive_target().unwrap().params.unwrap().user, "u2");
        assert!(r.job_set[1].create_time().is_some());
    }

    #[test]
    fn an_ended_job_took_its_status_time_less_its_create_time() {
        let job = |status: &str, created: &str, changed: &str| Job {
            job_id: "j-1".into(),
            job_action: String::new(),
            status: serde_json::from_value(serde_json::Value::String(status.into())).unwrap(),
            create_time: created.into(),
            status_time: changed.into(),
            resource_ids: String::new(),
            owner: String::new(),
            error_codes: String::new(),
            directive: String::new(),
        };
        let took = job("successful", "2024-05-01T08:57:03Z", "2024-05-01T08:57:09Z").took();
        assert_eq!(took, Some(std::time::Duration::from_secs(6)));
        assert_eq!(job("failed", "2024-05-01T08:57:03Z", "2024-05-01T08:57:04Z").took().map(|d| d.as_secs()), Some(1));
        // Still running: its status_time is not its end.
        assert_eq!(job("working", "2024-05-01T08:57:03Z", "2024-05-01T08:57:09Z").took(), None);
        // Missing, unreadable or backwards times say nothing.
        assert_eq!(job("successful", "", "2024-05-01T08:57:09Z").took(), None);
        assert_eq!(job("successful", "2024-05-01T08:57:03Z", "soon").took(), None);
        assert_eq!(job("successful", "2024-05-01T08:57:09Z", "2024-05-01T08:57:03Z").took(), None);
    }
}
