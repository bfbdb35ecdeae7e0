//! On-disk encoding of a [`StoredObject`]: a version byte, then uid and
//! resourceVersion as length-prefixed strings, then the JSON bytes as is.

use bytes::Bytes;

use super::StoredObject;

const VERSION: u8 = 1;

/// Encodes `o` for the objects tree.
pub fn encode(o: &StoredObject) -> Vec<u8> {
    let mut v = Vec::with_capacity(9 + o.uid.len() + o.resource_version.len() + o.json.len());
    v.push(VERSION);
    for s in [&o.uid, &o.resource_version] {
        v.extend_from_slice(&(s.len() as u32).to_be_bytes());
        v.extend_from_slice(s.as_bytes());
    }
    v.extend_from_slice(&o.json);
    v
}

/// Decodes a record; `None` if it is not one this build wrote.
pub fn decode(mut b: &[u8]) -> Option<StoredObject> {
    let (&version, rest) = b.split_first()?;
    if version != VERSION {
        return None;
    }
    b = rest;
    let mut strings = [String::new(), String::new()];
    for s in &mut strings {
        let (len, rest) = b.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
        if rest.len() < len {
            return None;
        }
        let (bytes, rest) = rest.split_at(len);
        *s = String::from_utf8(bytes.to_vec()).ok()?;
        b = rest;
    }
    let [uid, resource_version] = strings;
    Some(StoredObject {
        uid,
        resource_version,
        json: Bytes::copy_from_slice(b),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let o = StoredObject {
            uid: "u-1".into(),
            resource_version: "42".into(),
            json: Bytes::from_static(br#"{"a":1}"#),
        };
        assert_eq!(decode(&encode(&o)).unwrap(), o);
        assert!(decode(&[]).is_none());
        assert!(decode(&[2, 0, 0]).is_none());
        assert!(decode(&[1, 0, 0, 0, 9, b'x']).is_none());
    }
}
