//! edgecore
