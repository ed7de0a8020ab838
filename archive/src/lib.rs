//! Aster's stores and its query engine: the HATS catalog store, table schemas (Felis) and the
//! TAP metadata derived from them, the DataFusion query engine, the job store, the query log,
//! the dataset registry of raws, calibration products and processed images, and the
//! predicted visit schedule, the identity store (users, groups, tokens, sessions), and who may read users' own tables.
pub mod alerts;
pub mod calib_file;
pub mod catalog;
pub mod exposure_file;
pub mod fits_io;
pub mod formats;
pub mod hips;
pub mod identity;
pub mod jobs;
pub mod query;
pub mod querylog;
pub mod raw_file;
pub mod registry;
pub mod schedule;
pub mod schema;
pub mod table_search;
pub mod tap_schema;
#[cfg(test)]
mod testdir;
pub mod user_tables;
