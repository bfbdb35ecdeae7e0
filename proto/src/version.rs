//! Protocol versions and their negotiation.
//!
//! The edge announces the range it speaks in `Hello { min_version,
//! max_version }`; the cloud answers with the highest version both speak in
//! `HelloAck.version`, or refuses with an ERROR (code 426, reason
//! `"version_mismatch"`). Start at [`negotiate`].

/// The protocol version this build prefers (the highest it speaks).
pub const PROTOCOL_VERSION: u32 = 1;

/// The lowest protocol version this build still speaks.
pub const MIN_PROTOCOL_VERSION: u32 = 1;

/// The highest protocol version this build speaks.
pub const MAX_PROTOCOL_VERSION: u32 = PROTOCOL_VERSION;

/// Why no protocol version could be agreed on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// A side announced a range whose minimum is above its maximum, or
    /// which contains version 0 (0 means "not set" in protobuf).
    #[error("invalid {side} version range {min}..={max}")]
    InvalidRange {
        /// `"local"` or `"peer"`.
        side: &'static str,
        /// Announced minimum.
        min: u32,
        /// Announced maximum.
        max: u32,
    },
    /// The two ranges do not overlap.
    #[error(
        "no common protocol version: local {local_min}..={local_max}, peer {peer_min}..={peer_max}"
    )]
    NoOverlap {
        /// Our minimum.
        local_min: u32,
        /// Our maximum.
        local_max: u32,
        /// Peer's minimum.
        peer_min: u32,
        /// Peer's maximum.
        peer_max: u32,
    },
}

impl VersionError {
    /// Stable label for metrics and `ErrorInfo.reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            VersionError::InvalidRange { .. } => "invalid_version_range",
            VersionError::NoOverlap { .. } => "version_mismatch",
        }
    }
}

/// Picks the highest version inside both `local_min..=local_max` and
/// `peer_min..=peer_max`.
pub fn negotiate(
    local_min: u32,
    local_max: u32,
    peer_min: u32,
    peer_max: u32,
) -> Result<u32, VersionError> {
    check_range("local", local_min, local_max)?;
    check_range("peer", peer_min, peer_max)?;
    let low = local_min.max(peer_min);
    let high = local_max.min(peer_max);
    if low > high {
        return Err(VersionError::NoOverlap {
            local_min,
            local_max,
            peer_min,
            peer_max,
        });
    }
    Ok(high)
}

/// [`negotiate`] with this build's own range as the local side.
pub fn negotiate_with_peer(peer_min: u32, peer_max: u32) -> Result<u32, VersionError> {
    negotiate(
        MIN_PROTOCOL_VERSION,
        MAX_PROTOCOL_VERSION,
        peer_min,
        peer_max,
    )
}

fn check_range(side: &'static str, min: u32, max: u32) -> Result<(), VersionError> {
    if min == 0 || min > max {
        return Err(VersionError::InvalidRange { side, min, max });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn picks_highest_common() {
        assert_eq!(negotiate(1, 3, 2, 5), Ok(3));
        assert_eq!(negotiate(2, 5, 1, 3), Ok(3));
        assert_eq!(negotiate(1, 1, 1, 1), Ok(1));
        assert_eq!(negotiate(1, 10, 4, 4), Ok(4));
    }

    #[test]
    fn disjoint_ranges_fail() {
        let err = negotiate(1, 2, 3, 4).unwrap_err();
        assert_eq!(err.reason(), "version_mismatch");
        assert!(err.to_string().contains("peer 3..=4"));
        assert!(negotiate(3, 4, 1, 2).is_err());
    }

    #[test]
    fn invalid_ranges_fail() {
        assert_eq!(
            negotiate(2, 1, 1, 1),
            Err(VersionError::InvalidRange {
                side: "local",
                min: 2,
                max: 1
            })
        );
        let err = negotiate(1, 1, 0, 1).unwrap_err();
        assert_eq!(err.reason(), "invalid_version_range");
    }

    #[test]
    fn own_range_speaks_itself() {
        assert_eq!(
            negotiate_with_peer(PROTOCOL_VERSION, PROTOCOL_VERSION),
            Ok(PROTOCOL_VERSION)
        );
        assert_eq!(negotiate_with_peer(1, u32::MAX), Ok(MAX_PROTOCOL_VERSION));
    }
}
