//! Science algorithms and pipeline tasks for Aster. Pure computation: no HTTP, no storage.
//! So far: [`sky`], the deterministic synthetic sky and cadence behind the demo data release,
//! [`wcs`], the TAN-SIP world coordinates of images, [`image`], the image model (images,
//! masks with named planes, calibrated Exposures), [`psf`], spatially varying PSFs, and
//! [`background`], the sky background model, [`detection`], footprints and peaks, and
//! [`measurement`], centroids, PSF and aperture fluxes and shapes; [`render`] draws calibrated
//! CCD images of the synthetic sky with their truth, and [`single_frame`] measures them.
//! The instrument: [`camera`] describes the camera (amplifiers, electronics, the detector's
//! signature), [`camsim`] simulates its raw exposures ([`raw`]), drawing the sky through
//! [`scene`] with [`galaxy`] profiles. Coadds: [`skymap`] cuts the sky into patches,
//! [`warp`] resamples exposures onto them and [`coadd`] combines the warps; [`hips`] cuts
//! images into HiPS tiles and [`stretch`] maps their values to display levels and colours.
//! Solar system: [`orbits`] propagates asteroids' Keplerian orbits into ephemerides, in the
//! reference frames of [`frames`].
pub mod association;
pub mod background;
pub mod calib;
pub mod camera;
pub mod camsim;
pub mod characterize;
pub mod coadd;
pub mod convolve;
pub mod deblend;
pub mod detection;
pub mod dia;
pub mod diffim;
pub mod frames;
pub mod galaxy;
pub mod hips;
pub mod image;
pub mod isr;
pub mod linalg;
pub mod measurement;
pub mod orbits;
pub mod plain_image;
pub mod psf;
pub mod raw;
pub mod render;
pub mod scene;
pub mod single_frame;
pub mod sky;
pub mod skymap;
pub mod stretch;
pub mod template;
#[cfg(test)]
mod testkit;
pub mod tpv;
pub mod warp;
pub mod wcs;
pub mod wcs_fit;
