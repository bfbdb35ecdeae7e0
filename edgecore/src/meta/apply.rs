//! The pure rules of MetaManager: what one cloud frame does to the objects
//! held, with no IO. [`decide`] looks at the frame and the current state and
//! returns a [`Change`]; the writer applies it to memory and to a sled batch.
//!
//! Rules:
//! - OBJECT upsert: stored unless the same incarnation (uid) is already held
//!   at a newer resourceVersion (see [`rv_is_older`]) or at the same one.
//!   A different uid replaces the held object (a new incarnation).
//! - OBJECT delete: removes the held object only if its uid matches (a delete
//!   of an old incarnation never removes the new one).
//! - TOMBSTONE: the key is known not to exist: any held object goes, and the
//!   key is remembered as absent (so "missing" differs from "not synced").
//! - SYNCED: the resync is complete.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use proto::{Frame, Kind, ObjectIdentity, Op};

use super::StoredObject;

/// What a frame does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Store `object` at `key` (replacing what is there).
    Put {
        /// Resource key string.
        key: String,
        /// The new object.
        object: Arc<StoredObject>,
        /// False for a Device whose status alone changed (this edge's own status write
        /// coming back): held in memory but not written (see [`device_status_only`]).
        write: bool,
    },
    /// Remove the object at `key`.
    Remove {
        /// Resource key string.
        key: String,
    },
    /// Remove any object at `key` and remember the key as absent.
    Tombstone {
        /// Resource key string.
        key: String,
    },
    /// The resync is complete.
    Synced,
    /// Nothing to do; the reason is a metrics label.
    Ignore {
        /// Why (`older_version`, `same_version`, `uid_mismatch`, `absent`).
        reason: &'static str,
    },
}

/// A frame MetaManager cannot apply (the codec already validated it, so this
/// means a kind that does not belong here).
#[derive(Debug, thiserror::Error)]
#[error("MetaManager cannot apply a {kind} frame")]
pub struct NotAMetaFrame {
    /// The frame's kind label.
    pub kind: &'static str,
}

/// Whether `new` is an older resourceVersion than `held`. resourceVersions are
/// opaque strings, but kedge's API server and Kubernetes use integers: when
/// both parse as `u64` they are compared numerically; otherwise the incoming
/// one is treated as newer (never older).
pub fn rv_is_older(new: &str, held: &str) -> bool {
    match (new.parse::<u64>(), held.parse::<u64>()) {
        (Ok(n), Ok(h)) => n < h,
        _ => false,
    }
}

/// Decides what `frame` does given the objects held.
pub fn decide(
    objects: &BTreeMap<String, Arc<StoredObject>>,
    frame: &Frame,
) -> Result<Change, NotAMetaFrame> {
    let kind = Kind::try_from(frame.kind).unwrap_or(Kind::Unspecified);
    let key = || {
        frame
            .route
            .as_ref()
            .map(|r| r.resource.clone())
            .unwrap_or_default()
    };
    match kind {
        Kind::Synced => Ok(Change::Synced),
        Kind::Tombstone => Ok(Change::Tombstone { key: key() }),
        Kind::Object => match frame.op() {
            Ok(Op::Delete) => {
                let key = key();
                Ok(match objects.get(&key) {
                    None => Change::Ignore { reason: "absent" },
                    Some(held) if held.uid.is_empty() || held.uid == frame.uid => {
                        Change::Remove { key }
                    }
                    Some(_) => Change::Ignore {
                        reason: "uid_mismatch",
                    },
                })
            }
            _ => Ok(upsert(objects, key(), frame)),
        },
        other => Err(NotAMetaFrame {
            kind: other.label(),
        }),
    }
}

fn upsert(objects: &BTreeMap<String, Arc<StoredObject>>, key: String, frame: &Frame) -> Change {
    // The cloud sets uid and resourceVersion on the frame; fall back to the
    // JSON only when it did not.
    let (mut uid, mut rv) = (frame.uid.clone(), frame.resource_version.clone());
    if (uid.is_empty() || rv.is_empty())
        && let Ok(id) = ObjectIdentity::from_json(&frame.payload)
    {
        if uid.is_empty() {
            uid = id.uid;
        }
        if rv.is_empty() {
            rv = id.resource_version;
        }
    }
    if let Some(held) = objects.get(&key)
        && held.uid == uid
    {
        if rv_is_older(&rv, &held.resource_version) {
            return Change::Ignore {
                reason: "older_version",
            };
        }
        if rv == held.resource_version && !rv.is_empty() {
            return Change::Ignore {
                reason: "same_version",
            };
        }
    }
    let object = Arc::new(StoredObject {
        uid,
        resource_version: rv,
        json: Bytes::from(frame.payload.clone()),
    });
    let write = !objects
        .get(&key)
        .is_some_and(|held| device_status_only(&key, held, &object));
    Change::Put { key, object, write }
}

/// Whether `new` is a Device that differs from `held` only in `status` and
/// `metadata.resourceVersion` (and `managedFields`): the edge's own status write, echoed.
/// The store keeps the older version; after a restart the session's inventory says so and
/// the cloud sends the current one again, and the next other change writes it whole.
fn device_status_only(key: &str, held: &StoredObject, new: &StoredObject) -> bool {
    fn inputs(json: &[u8]) -> Option<serde_json::Value> {
        let mut v: serde_json::Value = serde_json::from_slice(json).ok()?;
        let o = v.as_object_mut()?;
        o.remove("status");
        if let Some(m) = o
            .get_mut("metadata")
            .and_then(serde_json::Value::as_object_mut)
        {
            m.remove("resourceVersion");
            m.remove("managedFields");
        }
        Some(v)
    }
    key.split('/').nth(1) == Some("device")
        && held.uid == new.uid
        && held.resource_version != new.resource_version
        && match (inputs(&held.json), inputs(&new.json)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proto::ResourceKey;

    use super::*;

    fn held(uid: &str, rv: &str) -> BTreeMap<String, Arc<StoredObject>> {
        let mut m = BTreeMap::new();
        m.insert(
            "default/pod/a".to_owned(),
            Arc::new(StoredObject {
                uid: uid.into(),
                resource_version: rv.into(),
                json: Bytes::from_static(b"{}"),
            }),
        );
        m
    }

    fn key() -> ResourceKey {
        ResourceKey::parse("default/pod/a").unwrap()
    }

    fn upsert_frame(uid: &str, rv: &str) -> Frame {
        Frame::upsert(1, &key(), uid, rv, br#"{"kind":"Pod"}"#.to_vec())
    }

    #[test]
    fn upsert_of_new_key_is_stored() {
        let c = decide(&BTreeMap::new(), &upsert_frame("u1", "5")).unwrap();
        let Change::Put { key, object, .. } = c else {
            panic!("{c:?}")
        };
        assert_eq!(key, "default/pod/a");
        assert_eq!(
            (object.uid.as_str(), object.resource_version.as_str()),
            ("u1", "5")
        );
    }

    #[test]
    fn older_rv_of_same_uid_is_ignored_newer_is_stored() {
        let m = held("u1", "10");
        assert_eq!(
            decide(&m, &upsert_frame("u1", "9")).unwrap(),
            Change::Ignore {
                reason: "older_version"
            }
        );
        // numeric, not lexicographic: "9" < "10" but "11" > "10"
        assert!(matches!(
            decide(&m, &upsert_frame("u1", "11")).unwrap(),
            Change::Put { .. }
        ));
        assert_eq!(
            decide(&m, &upsert_frame("u1", "10")).unwrap(),
            Change::Ignore {
                reason: "same_version"
            }
        );
    }

    #[test]
    fn a_new_incarnation_replaces_whatever_its_version() {
        let m = held("u1", "10");
        assert!(matches!(
            decide(&m, &upsert_frame("u2", "3")).unwrap(),
            Change::Put { .. }
        ));
    }

    #[test]
    fn opaque_versions_are_treated_as_newer() {
        assert!(!rv_is_older("abc", "10"));
        assert!(!rv_is_older("9", "xyz"));
        assert!(rv_is_older("9", "10"));
        assert!(!rv_is_older("10", "9"));
        let m = held("u1", "opaque-2");
        assert!(matches!(
            decide(&m, &upsert_frame("u1", "opaque-1")).unwrap(),
            Change::Put { .. }
        ));
    }

    #[test]
    fn uid_and_rv_fall_back_to_the_json() {
        let json = br#"{"kind":"Pod","metadata":{"name":"a","namespace":"default","uid":"u7","resourceVersion":"42"}}"#;
        let f = Frame::object(1, &key(), "", json.to_vec());
        let Change::Put { object, .. } = decide(&BTreeMap::new(), &f).unwrap() else {
            panic!()
        };
        assert_eq!(
            (object.uid.as_str(), object.resource_version.as_str()),
            ("u7", "42")
        );
    }

    #[test]
    fn delete_removes_only_the_matching_incarnation() {
        let m = held("u1", "10");
        assert_eq!(
            decide(&m, &Frame::delete(1, &key(), "u1", "10")).unwrap(),
            Change::Remove {
                key: "default/pod/a".into()
            }
        );
        assert_eq!(
            decide(&m, &Frame::delete(1, &key(), "u0", "3")).unwrap(),
            Change::Ignore {
                reason: "uid_mismatch"
            }
        );
        assert_eq!(
            decide(&BTreeMap::new(), &Frame::delete(1, &key(), "u1", "10")).unwrap(),
            Change::Ignore { reason: "absent" }
        );
    }

    #[test]
    fn tombstone_and_synced() {
        assert_eq!(
            decide(&BTreeMap::new(), &Frame::tombstone(1, &key())).unwrap(),
            Change::Tombstone {
                key: "default/pod/a".into()
            }
        );
        assert_eq!(
            decide(&BTreeMap::new(), &Frame::synced(1)).unwrap(),
            Change::Synced
        );
        assert!(decide(&BTreeMap::new(), &Frame::ping(1)).is_err());
    }
}
