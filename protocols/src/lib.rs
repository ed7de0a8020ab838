//! Aster's HTTP services (TAP 1.1 with UWS 1.1 and VOSI, the query history, metrics; SIAv2,
//! DataLink, SODA, dataset downloads and MOCs over the dataset registry) and the table
//! writers they stream results with.
pub mod formats;
pub mod images;
pub mod metrics;
pub mod tap;
pub mod uws;
mod xml;
