//! Aster's HTTP services (TAP 1.1 with UWS 1.1 and VOSI, the query history, metrics; SIAv2,
//! DataLink, SODA, dataset downloads and MOCs over the dataset registry; the predicted visit
//! schedule) and the table
//! writers they stream results with.
pub mod formats;
pub mod images;
pub mod metrics;
pub mod schedule;
pub mod tap;
pub mod uws;
mod xml;
