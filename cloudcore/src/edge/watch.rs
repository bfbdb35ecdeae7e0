//! The watchers and GETs that feed the edge cache.
//!
//! Start order follows the filters: Nodes first; Pods and Devices once the edge Nodes are
//! known (so they can be filtered); ConfigMaps/Secrets once Pods are synced and
//! DeviceModels once Devices are (so references are known). An edge node that appears
//! later may already have pods or devices the filter dropped: Pods are probed with a
//! `spec.nodeName=<node>` list and relisted only if it has any; Devices (a CRD, whose field
//! selectors are limited in real clusters) are relisted. A missing Device CRD counts as
//! "no devices" so the cache still becomes synced.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, TypeMeta};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use proto::ResourceKey;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::state::{Item, Kind};
use super::{DesiredObject, EdgeCache, refs};
use crate::lifecycle::EDGE_ROLE_LABEL;
use crate::nodeca::api_status;

/// GETs for newly referenced objects in flight at once.
pub(super) const MAX_CONCURRENT_FETCHES: usize = 16;
/// Attempts of one GET before giving up (the watch still delivers later changes).
const FETCH_ATTEMPTS: u32 = 8;

const DEVICE_GROUP: &str = "devices.kubeedge.io";
const DEVICE_VERSION: &str = "v1beta1";

fn device_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(DEVICE_GROUP, DEVICE_VERSION, kind),
        plural,
    )
}

/// Starts every watcher task.
pub(super) fn spawn_all(cache: &Arc<EdgeCache>) {
    let client = cache.client.clone();
    let nodes = watcher::Config::default().labels(EDGE_ROLE_LABEL);
    let pods = watcher::Config::default().fields("spec.nodeName!=");
    let all = watcher::Config::default;
    let devices = device_resource("Device", "devices");
    let models = device_resource("DeviceModel", "devicemodels");
    spawn_watch(
        cache,
        Kind::Node,
        None,
        Api::<Node>::all(client.clone()),
        nodes,
        |n| typed(n, "node").map(Item::Node),
    );
    spawn_watch(
        cache,
        Kind::Pod,
        Some(Kind::Node),
        Api::<Pod>::all(client.clone()),
        pods,
        pod_item,
    );
    spawn_watch(
        cache,
        Kind::ConfigMap,
        Some(Kind::Pod),
        Api::<ConfigMap>::all(client.clone()),
        all(),
        |o| typed(o, refs::CONFIGMAP).map(Item::Ref),
    );
    spawn_watch(
        cache,
        Kind::Secret,
        Some(Kind::Pod),
        Api::<Secret>::all(client.clone()),
        all(),
        |o| typed(o, refs::SECRET).map(Item::Ref),
    );
    let api = Api::<DynamicObject>::all_with(client.clone(), &devices);
    spawn_watch(
        cache,
        Kind::Device,
        Some(Kind::Node),
        api,
        all(),
        device_item,
    );
    let api = Api::<DynamicObject>::all_with(client, &models);
    spawn_watch(
        cache,
        Kind::DeviceModel,
        Some(Kind::Device),
        api,
        all(),
        |o| dynamic(o, "DeviceModel", refs::DEVICEMODEL).map(Item::Ref),
    );
}

/// Spawns the watcher of `kind`, started once `after` is synced.
fn spawn_watch<K>(
    cache: &Arc<EdgeCache>,
    kind: Kind,
    after: Option<Kind>,
    api: Api<K>,
    cfg: watcher::Config,
    convert: fn(K) -> Option<Item>,
) where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let cache = cache.clone();
    tokio::spawn(async move {
        if let Some(after) = after
            && !cache.wait_kind(after).await
        {
            return;
        }
        drive(cache, kind, api, cfg, convert).await;
    });
}

/// Runs one watcher until shutdown, feeding the state. Pods and Devices restart (relist)
/// when new edge nodes need it.
async fn drive<K>(
    cache: Arc<EdgeCache>,
    kind: Kind,
    api: Api<K>,
    cfg: watcher::Config,
    convert: fn(K) -> Option<Item>,
) where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    loop {
        let mut stream = watcher(api.clone(), cfg.clone()).default_backoff().boxed();
        loop {
            let rescan_wanted = async {
                match kind {
                    Kind::Pod => cache.rescan.pods.notified().await,
                    Kind::Device => cache.rescan.devices.notified().await,
                    _ => std::future::pending().await,
                }
            };
            let event = tokio::select! {
                biased;
                _ = cache.shutdown.cancelled() => return,
                _ = rescan_wanted => {
                    if should_relist(&cache, kind).await {
                        tracing::debug!(?kind, "new edge node: relisting");
                        break;
                    }
                    continue;
                }
                e = stream.next() => e,
            };
            match event {
                None => break,
                Some(Ok(watcher::Event::Init)) => cache.commit(|s| {
                    s.begin_list(kind);
                    Vec::new()
                }),
                Some(Ok(watcher::Event::InitApply(o))) => {
                    if let Some(item) = convert(o) {
                        cache.commit(|s| {
                            s.list_item(kind, item);
                            Vec::new()
                        });
                    }
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    cache.commit(|s| s.end_list(kind));
                    tracing::debug!(?kind, "watch cache listed");
                }
                Some(Ok(watcher::Event::Apply(o))) => {
                    if let Some(item) = convert(o) {
                        cache.commit(|s| s.apply(item));
                    }
                }
                Some(Ok(watcher::Event::Delete(o))) => {
                    if let Some(item) = convert(o) {
                        cache.commit(|s| s.delete(item));
                    }
                }
                Some(Err(e)) => on_error(&cache, kind, &e),
            }
        }
    }
}

fn on_error(cache: &Arc<EdgeCache>, kind: Kind, e: &watcher::Error) {
    let not_found =
        matches!(e, watcher::Error::InitialListFailed(inner) if api_status(inner) == Some(404));
    if not_found && matches!(kind, Kind::Device | Kind::DeviceModel) {
        let first = !cache.lock().is_synced(kind);
        if first {
            tracing::info!(
                ?kind,
                "the Device CRDs are not installed; no devices to sync until they are"
            );
            cache.commit(|s| {
                s.mark_synced(kind);
                if kind == Kind::Device {
                    s.mark_synced(Kind::DeviceModel);
                }
                Vec::new()
            });
        }
        return;
    }
    tracing::warn!(?kind, error = %e, "edge cache watch failed; retrying with back-off");
}

/// After new edge nodes appeared: does this watcher need a relist?
async fn should_relist(cache: &Arc<EdgeCache>, kind: Kind) -> bool {
    if kind != Kind::Pod {
        return true;
    }
    let nodes: Vec<String> = cache
        .rescan
        .pod_nodes
        .lock()
        .map(|mut p| std::mem::take(&mut *p))
        .unwrap_or_default();
    let pods: Api<Pod> = Api::all(cache.client.clone());
    for node in nodes {
        let lp = ListParams::default()
            .fields(&format!("spec.nodeName={node}"))
            .limit(1);
        match pods.list_metadata(&lp).await {
            Ok(list) if list.items.is_empty() => {}
            // Pods found, or the probe failed: relist to be sure.
            _ => return true,
        }
    }
    false
}

fn pod_item(pod: Pod) -> Option<Item> {
    let node = refs::pod_node(&pod).map(str::to_owned);
    let refs = refs::pod_refs(&pod);
    let obj = typed(pod, "pod")?;
    Some(Item::Member { obj, node, refs })
}

fn device_item(device: DynamicObject) -> Option<Item> {
    let ns = device.metadata.namespace.clone().unwrap_or_default();
    let (node, model) = refs::device_refs(&ns, &device.data);
    let obj = dynamic(device, "Device", "device")?;
    Some(Item::Member {
        obj,
        node,
        refs: model.into_iter().collect(),
    })
}

/// A typed object as the edge will store it.
fn typed<K: Resource + Serialize>(mut obj: K, kind: &str) -> Option<DesiredObject> {
    obj.meta_mut().managed_fields = None;
    let meta = obj.meta();
    let key = ResourceKey::new(meta.namespace.as_deref(), kind, meta.name.clone()?).ok()?;
    let uid = meta.uid.clone().unwrap_or_default();
    let resource_version = meta.resource_version.clone().unwrap_or_default();
    let json = serde_json::to_vec(&obj).ok()?;
    Some(DesiredObject {
        key,
        uid,
        resource_version,
        json: json.into(),
    })
}

/// A Device/DeviceModel, with apiVersion and kind filled in (lists omit them per item).
fn dynamic(mut obj: DynamicObject, kind: &str, key_kind: &str) -> Option<DesiredObject> {
    obj.types = Some(TypeMeta {
        api_version: format!("{DEVICE_GROUP}/{DEVICE_VERSION}"),
        kind: kind.into(),
    });
    typed(obj, key_kind)
}

/// GETs a newly referenced object and feeds the result back.
pub(super) fn spawn_fetch(cache: Arc<EdgeCache>, key: ResourceKey, touched: u64) {
    tokio::spawn(async move {
        let Ok(_permit) = cache.fetch_permits.clone().acquire_owned().await else {
            return;
        };
        let mut delay = Duration::from_millis(200);
        for attempt in 1..=FETCH_ATTEMPTS {
            match fetch(&cache, &key).await {
                Ok(result) => {
                    cache.commit(|s| s.fetched(&key, touched, result));
                    return;
                }
                Err(e) if attempt == FETCH_ATTEMPTS => {
                    tracing::warn!(%key, error = %e, "fetching a referenced object failed; waiting for the watch");
                }
                Err(e) => {
                    tracing::debug!(%key, error = %e, attempt, "fetching a referenced object")
                }
            }
            tokio::select! {
                _ = cache.shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    });
}

async fn fetch(cache: &EdgeCache, key: &ResourceKey) -> Result<Option<DesiredObject>, kube::Error> {
    let ns = key.namespace_segment();
    let client = cache.client.clone();
    Ok(match key.kind.as_str() {
        refs::CONFIGMAP => Api::<ConfigMap>::namespaced(client, ns)
            .get_opt(&key.name)
            .await?
            .and_then(|o| typed(o, refs::CONFIGMAP)),
        refs::SECRET => Api::<Secret>::namespaced(client, ns)
            .get_opt(&key.name)
            .await?
            .and_then(|o| typed(o, refs::SECRET)),
        refs::DEVICEMODEL => {
            let api: Api<DynamicObject> =
                Api::namespaced_with(client, ns, &device_resource("DeviceModel", "devicemodels"));
            match api.get_opt(&key.name).await {
                Ok(o) => o.and_then(|o| dynamic(o, "DeviceModel", refs::DEVICEMODEL)),
                // No CRD: no such model.
                Err(e) if api_status(&e) == Some(404) => None,
                Err(e) => return Err(e),
            }
        }
        _ => None,
    })
}
