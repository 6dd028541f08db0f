//! `DescribeClusters` and `DescribeTags`: the clusters of one zone and the tags they carry,
//! filtered and paged as list APIs are. The auto world knows every well-formed `clusters.N` id
//! as an active MySQL Plus cluster (in the zone it is first addressed in) and lists the clusters
//! addressed so far.
//!
//! They read the world and the book; they create no job and delete no account.

use std::collections::BTreeSet;

use sha2::Digest;

use crate::qingcloud::types::{
    ret, ClusterInfo, DescribeClustersResponse, DescribeTagsResponse, TagInfo, DESCRIBE_CLUSTERS, DESCRIBE_TAGS,
    MYSQL_PLUS_APP_ID,
};
use crate::sim::answer::{response_action, to_json, Refusal};
use crate::sim::request::Params;
use crate::sim::world::Model;

use super::{Cloud, DEFAULT_LIMIT, MAX_LIMIT};

/// DescribeClusters in one zone: filters `clusters.N`, `apps.N`, `status.N`, `tags.N` (tag
/// ids, as DescribeTags gives them: a cluster carrying any of them), `cluster_name` (a substring), paged by `offset`/`limit` (default 20, at most
/// 100), sorted by cluster id. The auto world knows every well-formed `clusters.N` id as an
/// active MySQL Plus cluster (in the zone it is first addressed in), and lists the
/// clusters addressed so far.
pub fn describe_clusters(model: &Model, cloud: &mut Cloud, params: &Params<'_>) -> Result<Vec<u8>, Refusal> {
    let zone = params.zone()?;
    let ids = params.indexed("clusters")?;
    let apps = params.indexed("apps")?;
    let statuses = params.indexed("status")?;
    let tags = params.indexed("tags")?;
    let name = params.get("cluster_name").unwrap_or("");
    let offset = params.number("offset")?.unwrap_or(0);
    let limit = params.number("limit")?.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
    let mut found: Vec<(ClusterInfo, Vec<String>)> = Vec::new();
    match &model.clusters {
        Some(map) => {
            for (id, c) in map.iter().filter(|(_, c)| c.zone == zone) {
                let tags: Vec<TagInfo> =
                    c.tags.iter().map(|n| TagInfo { tag_id: tag_id(n), tag_name: n.clone() }).collect();
                let info = ClusterInfo {
                    cluster_id: id.clone(),
                    name: c.name.clone(),
                    app_id: c.app_id.clone(),
                    app_version: String::new(),
                    status: c.status.clone(),
                    transition_status: c.transition_status.clone(),
                    tags: tags.clone(),
                };
                found.push((info, tags.into_iter().map(|t| t.tag_id).collect()));
            }
        }
        None => {
            for id in &ids {
                cloud.book.cluster_in_zone(id, zone);
            }
            for id in cloud.book.clusters_in_zone(zone) {
                let info = ClusterInfo {
                    cluster_id: id,
                    app_id: MYSQL_PLUS_APP_ID.to_owned(),
                    status: "active".to_owned(),
                    ..ClusterInfo::default()
                };
                found.push((info, Vec::new()));
            }
        }
    }
    found.retain(|(c, t)| {
        (ids.is_empty() || ids.contains(&c.cluster_id))
            && (apps.is_empty() || apps.contains(&c.app_id))
            && (statuses.is_empty() || statuses.contains(&c.status))
            && (tags.is_empty() || tags.iter().any(|tag| t.contains(tag)))
            && c.name.contains(name)
    });
    to_json(&DescribeClustersResponse {
        action: response_action(DESCRIBE_CLUSTERS),
        ret_code: ret::OK,
        message: String::new(),
        total_count: found.len() as u64,
        cluster_set: found.into_iter().skip(offset).take(limit).map(|(c, _)| c).collect(),
    })
}

/// DescribeTags: the tags the world's clusters carry (one id per name, [`tag_id`]), filtered
/// by `tags.N` (ids) and `search_word` (a substring of the name), sorted by name and paged
/// like DescribeClusters. Tags are the account's, not a zone's: every zone lists them all.
pub fn describe_tags(model: &Model, params: &Params<'_>) -> Result<Vec<u8>, Refusal> {
    params.zone()?;
    let ids = params.indexed("tags")?;
    let word = params.get("search_word").unwrap_or("");
    let offset = params.number("offset")?.unwrap_or(0);
    let limit = params.number("limit")?.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
    let names: BTreeSet<&str> =
        model.clusters.iter().flat_map(|m| m.values()).flat_map(|c| c.tags.iter().map(String::as_str)).collect();
    let found: Vec<TagInfo> = names
        .into_iter()
        .map(|n| TagInfo { tag_id: tag_id(n), tag_name: n.to_owned() })
        .filter(|t| (ids.is_empty() || ids.contains(&t.tag_id)) && t.tag_name.contains(word))
        .collect();
    to_json(&DescribeTagsResponse {
        action: response_action(DESCRIBE_TAGS),
        ret_code: ret::OK,
        message: String::new(),
        total_count: found.len() as u64,
        tag_set: found.into_iter().skip(offset).take(limit).collect(),
    })
}

/// The id the simulator gives the tag named `name`: `tag-` and eight hex digits of its SHA-256,
/// the same in every zone and every run.
pub fn tag_id(name: &str) -> String {
    let digest = sha2::Sha256::digest(name.as_bytes());
    let hex: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("tag-{hex}")
}
