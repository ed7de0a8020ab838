//! Science algorithms and pipeline tasks for Aster. Pure computation: no HTTP, no storage.
//! So far: [`sky`], the deterministic synthetic sky and cadence behind the demo data release,
//! and [`wcs`], the TAN-SIP world coordinates of images.
pub mod sky;
pub mod wcs;
