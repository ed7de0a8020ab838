//! Science algorithms and pipeline tasks for Aster. Pure computation: no HTTP, no storage.
//! So far: [`sky`], the deterministic synthetic sky and cadence behind the demo data release,
//! [`wcs`], the TAN-SIP world coordinates of images, [`image`], the image model (images,
//! masks with named planes, calibrated Exposures), [`psf`], spatially varying PSFs, and
//! [`background`], the sky background model, [`detection`], footprints and peaks, and
//! [`measurement`], centroids and PSF and aperture fluxes.
pub mod background;
pub mod detection;
pub mod image;
pub mod measurement;
pub mod psf;
pub mod sky;
pub mod wcs;
