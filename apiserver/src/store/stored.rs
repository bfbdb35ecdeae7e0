//! One stored version of an object: [`Stored`], its bytes and its lazily parsed value.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde_json::Value;

/// One stored version of an object: its serialised bytes (lists and watches send them as
/// they are) and its JSON value, parsed once when first read.
///
/// A current object is stored parsed (writes, selectors and tables read it). A version that
/// a later write superseded is kept as bytes only ([`Stored::bytes_only`]): snapshot lists and
/// watch history mostly just send it, and a parsed 6 KB pod takes ~60 KB of memory.
#[derive(Debug, Clone)]
pub struct Stored(Arc<StoredObj>);

/// The contents of a [`Stored`].
#[derive(Debug)]
pub struct StoredObj {
    /// The object (parsed from `raw` on first use when stored as bytes only).
    pub value: LazyValue,
    /// `serde_json::to_vec(&value)`.
    pub raw: Bytes,
    /// Its resourceVersion.
    pub rv: u64,
}

/// An object's JSON value, parsed from its bytes on first use; dereferences to the
/// [`Value`]. Bytes that do not parse (never written by this server) read as `null`.
pub struct LazyValue {
    cell: OnceLock<Value>,
    raw: Bytes,
}

impl LazyValue {
    /// Is the value parsed (and so held in memory)?
    pub fn is_parsed(&self) -> bool {
        self.cell.get().is_some()
    }
}

impl std::ops::Deref for LazyValue {
    type Target = Value;
    fn deref(&self) -> &Value {
        self.cell
            .get_or_init(|| serde_json::from_slice(&self.raw).unwrap_or(Value::Null))
    }
}

impl std::fmt::Debug for LazyValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.cell.get() {
            Some(v) => v.fmt(f),
            None => write!(f, "<{} bytes, not parsed>", self.raw.len()),
        }
    }
}

impl Stored {
    pub(super) fn new(value: Value, rv: u64) -> Self {
        let raw = Bytes::from(serde_json::to_vec(&value).unwrap_or_default());
        Self(Arc::new(StoredObj {
            value: LazyValue {
                cell: OnceLock::from(value),
                raw: raw.clone(),
            },
            raw,
            rv,
        }))
    }

    /// A version from its bytes, parsed only when its value is read.
    pub(super) fn from_bytes(raw: Bytes, rv: u64) -> Self {
        Self(Arc::new(StoredObj {
            value: LazyValue {
                cell: OnceLock::new(),
                raw: raw.clone(),
            },
            raw,
            rv,
        }))
    }

    /// The same version held as bytes only (the parsed value, if any, is not shared).
    pub fn bytes_only(&self) -> Self {
        if self.value.is_parsed() {
            Self::from_bytes(self.raw.clone(), self.rv)
        } else {
            self.clone()
        }
    }

    /// A version that is not in the store (dry runs): its resourceVersion is set to `rv`.
    pub fn detached(mut value: Value, rv: u64) -> Self {
        super::set_rv(&mut value, rv);
        Self::new(value, rv)
    }

    /// Do `a` and `b` share one stored version (not merely equal ones)?
    pub fn same(a: &Self, b: &Self) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }
}

impl std::ops::Deref for Stored {
    type Target = StoredObj;
    fn deref(&self) -> &StoredObj {
        &self.0
    }
}
