//! Science algorithms and pipeline tasks for Aster. Pure computation: no HTTP, no storage.
//! So far: [`sky`], the deterministic synthetic sky and cadence behind the demo data release.
pub mod sky;
