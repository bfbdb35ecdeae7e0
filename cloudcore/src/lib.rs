//! cloudcore
