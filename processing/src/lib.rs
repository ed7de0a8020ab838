//! Science algorithms and pipeline tasks for Aster. Pure computation: no HTTP, no storage.
//! So far: [`sky`], the deterministic synthetic sky and cadence behind the demo data release,
//! [`wcs`], the TAN-SIP world coordinates of images, [`image`], the image model (images,
//! masks with named planes, calibrated Exposures), [`psf`], spatially varying PSFs, and
//! [`background`], the sky background model, [`detection`], footprints and peaks, and
//! [`measurement`], centroids, PSF and aperture fluxes and shapes; [`render`] draws calibrated
//! CCD images of the synthetic sky with their truth, and [`single_frame`] measures them.
pub mod background;
pub mod detection;
pub mod image;
pub mod measurement;
pub mod psf;
pub mod render;
pub mod single_frame;
pub mod sky;
#[cfg(test)]
mod testkit;
pub mod wcs;
