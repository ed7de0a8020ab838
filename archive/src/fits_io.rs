//! FITS through cfitsio, shared by the exposure, raw and calibration files: header cards
//! written exactly as given (17 significant digits survive), every card read back with its
//! raw value, tile compression switched per HDU, errors that name the file and the step,
//! and atomic writes (a temporary file beside the final name, renamed into place).
use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::path::{Path, PathBuf};

use aster_processing::image::HeaderValue;
use fitsio::FitsFile;

/// What went wrong, naming the file and the step.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {step}: {message}")]
pub struct FitsFileError {
    pub path: PathBuf,
    pub step: &'static str,
    pub message: String,
}

impl FitsFileError {
    pub fn new(path: &Path, step: &'static str, message: impl std::fmt::Display) -> Self {
        Self {
            path: path.to_path_buf(),
            step,
            message: message.to_string(),
        }
    }
}

/// Writes `path` through `write`, which fills a new FITS file: into a temporary file
/// beside it, renamed over `path` only when everything was written.
pub(crate) fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut FitsFile) -> Result<(), FitsFileError>,
) -> Result<(), FitsFileError> {
    write_atomically_with(path, None, write)
}

/// [`write_atomically`] with a primary HDU that holds an image of `primary`'s shape and
/// type (for single-HDU files) instead of none.
pub(crate) fn write_atomically_with(
    path: &Path,
    primary: Option<&fitsio::images::ImageDescription>,
    write: impl FnOnce(&mut FitsFile) -> Result<(), FitsFileError>,
) -> Result<(), FitsFileError> {
    let tmp = path.with_extension(format!("tmp-{}.fits", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let builder = FitsFile::create(&tmp);
    let builder = match primary {
        Some(d) => builder.with_custom_primary(d),
        None => builder,
    };
    let result = builder
        .open()
        .map_err(|e| FitsFileError::new(path, "create", e))
        .and_then(|mut f| {
            write(&mut f)?;
            // Closing flushes cfitsio's buffers to the temporary file before the rename.
            drop(f);
            Ok(())
        });
    match result {
        Ok(()) => std::fs::rename(&tmp, path).map_err(|e| FitsFileError::new(path, "rename", e)),
        Err(err) => {
            let _ = std::fs::remove_file(&tmp);
            Err(err)
        }
    }
}

/// Keywords that describe an HDU rather than what it holds.
const STRUCTURAL: &[&str] = &[
    "SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "COMMENT", "HISTORY", "",
    "CHECKSUM", "DATASUM",
];

/// Opens `path` at its primary HDU, verifies its checksums and returns the file with the
/// header's cards (structural keywords left out) parsed into values; `step` names what
/// the cards are for in errors.
pub(crate) fn open_primary(
    path: &Path,
    step: &'static str,
) -> Result<(FitsFile, std::collections::BTreeMap<String, HeaderValue>), FitsFileError> {
    let mut f = FitsFile::open(path).map_err(|e| FitsFileError::new(path, "open", e))?;
    f.primary_hdu()
        .map_err(|e| FitsFileError::new(path, "primary HDU", e))?;
    verify_checksum(&mut f, true)
        .map_err(|e| FitsFileError::new(path, "checksum", format!("primary HDU: {e}")))?;
    let cards = all_cards(&mut f)
        .map_err(|e| FitsFileError::new(path, step, e))?
        .into_iter()
        .filter(|(k, _)| !STRUCTURAL.contains(&k.as_str()))
        .map(|(k, v)| (k, parse_value(&v)))
        .collect();
    Ok((f, cards))
}

/// The text of a header value as a card holds it (reals with 17 significant digits).
pub(crate) fn card_text(key: &str, value: &HeaderValue) -> Result<String, String> {
    Ok(match value {
        HeaderValue::Bool(b) => (if *b { "T" } else { "F" }).to_string(),
        HeaderValue::Int(i) => i.to_string(),
        HeaderValue::Float(x) if x.is_finite() => format!("{x:.17E}"),
        HeaderValue::Float(_) => return Err(format!("{key}: not a finite number")),
        HeaderValue::Text(t) => quoted(t),
    })
}

/// A FITS string value: quoted, inner quotes doubled, padded to eight characters.
pub(crate) fn quoted(t: &str) -> String {
    format!("'{:<8}'", t.replace('\'', "''"))
}

/// Parses a raw header value: logical, quoted string, integer or real.
pub(crate) fn parse_value(v: &str) -> HeaderValue {
    let v = v.trim();
    if let Some(inner) = v.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        return HeaderValue::Text(inner.replace("''", "'").trim_end().to_string());
    }
    match v {
        "T" => return HeaderValue::Bool(true),
        "F" => return HeaderValue::Bool(false),
        _ => {}
    }
    if let Ok(i) = v.parse::<i64>() {
        return HeaderValue::Int(i);
    }
    match v.replace(['D', 'd'], "E").parse::<f64>() {
        Ok(x) => HeaderValue::Float(x),
        Err(_) => HeaderValue::Text(v.to_string()),
    }
}

pub(crate) fn status_error(status: i32) -> String {
    let mut text = [0 as c_char; 31];
    // SAFETY: ffgerr writes at most 30 characters and a terminating NUL.
    unsafe { fitsio::sys::ffgerr(status, text.as_mut_ptr()) };
    // SAFETY: the buffer is NUL-terminated (zeroed, and ffgerr terminates).
    let text = unsafe { CStr::from_ptr(text.as_ptr()) };
    format!("cfitsio status {status}: {}", text.to_string_lossy())
}

/// Appends `KEY = value` to the current HDU's header, with the value exactly as given (the
/// fitsio key writers round reals to fewer digits than a WCS needs).
pub(crate) fn write_card(
    f: &mut FitsFile,
    key: &str,
    value: &str,
) -> std::result::Result<(), String> {
    write_card_with_comment(f, key, value, "")
}

/// [`write_card`] with a comment, shortened to what the card has room for.
pub(crate) fn write_card_with_comment(
    f: &mut FitsFile,
    key: &str,
    value: &str,
    comment: &str,
) -> std::result::Result<(), String> {
    let valid = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !valid {
        return Err(format!("'{key}' is not a FITS keyword (A-Z 0-9 - _)"));
    }
    // Names longer than eight characters use the HIERARCH convention, as the LSST stack's
    // MP_DETECTED and friends do.
    let card = if key.len() <= 8 {
        format!("{key:<8}= {value:>20}")
    } else {
        format!("HIERARCH {key} = {value}")
    };
    if card.len() > 80 || !card.is_ascii() {
        return Err(format!("{key}: the value does not fit an ASCII card"));
    }
    let card = match comment.is_empty() || card.len() + 3 >= 80 || !comment.is_ascii() {
        true => card,
        false => {
            let mut c = format!("{card} / {comment}");
            c.truncate(80);
            c
        }
    };
    let c = CString::new(card).map_err(|e| e.to_string())?;
    let mut status = 0;
    // SAFETY: `f` is an open, writable file positioned on the HDU being written; the card
    // is a NUL-terminated string of at most 80 characters.
    unsafe { fitsio::sys::ffprec(f.as_raw(), c.as_ptr(), &mut status) };
    if status != 0 {
        return Err(status_error(status));
    }
    Ok(())
}

/// cfitsio's code for Rice tile compression.
pub(crate) const RICE_1: i32 = 11;

/// Sets the compression of images created next in `f` (0: none).
pub(crate) fn set_compression(f: &mut FitsFile, kind: i32) -> std::result::Result<(), String> {
    let mut status = 0;
    // SAFETY: `f` is an open, writable file; the call only records the setting.
    unsafe { fitsio::sys::fits_set_compression_type(f.as_raw(), kind, &mut status) };
    if status != 0 {
        return Err(status_error(status));
    }
    Ok(())
}

/// Every card of the current HDU as (keyword, raw value).
pub(crate) fn all_cards(f: &mut FitsFile) -> std::result::Result<Vec<(String, String)>, String> {
    let (mut count, mut more, mut status) = (0, 0, 0);
    // SAFETY: `f` is open and positioned on an HDU; the out-pointers are valid.
    unsafe { fitsio::sys::ffghsp(f.as_raw(), &mut count, &mut more, &mut status) };
    if status != 0 {
        return Err(status_error(status));
    }
    let mut out = Vec::with_capacity(count as usize);
    for n in 1..=count {
        // FLEN_KEYWORD = 75, FLEN_VALUE = 71, FLEN_COMMENT = 73, with room to spare.
        let mut key = [0 as c_char; 80];
        let mut value = [0 as c_char; 80];
        let mut comment = [0 as c_char; 80];
        // SAFETY: as above; the buffers are larger than cfitsio's maximum lengths.
        unsafe {
            fitsio::sys::ffgkyn(
                f.as_raw(),
                n,
                key.as_mut_ptr(),
                value.as_mut_ptr(),
                comment.as_mut_ptr(),
                &mut status,
            )
        };
        if status != 0 {
            return Err(status_error(status));
        }
        // SAFETY: cfitsio NUL-terminates the strings it returns.
        let (k, v) = unsafe { (CStr::from_ptr(key.as_ptr()), CStr::from_ptr(value.as_ptr())) };
        let k = k.to_string_lossy();
        let k = k.strip_prefix("HIERARCH ").unwrap_or(&k).trim().to_string();
        out.push((k, v.to_string_lossy().into_owned()));
    }
    Ok(out)
}

/// Writes the CHECKSUM and DATASUM cards of the current HDU (FITS checksum convention), once
/// its header and data are complete.
pub(crate) fn write_checksum(f: &mut FitsFile) -> std::result::Result<(), String> {
    let mut status = 0;
    // SAFETY: `f` is open, writable and positioned on the HDU just written.
    unsafe { fitsio::sys::ffpcks(f.as_raw(), &mut status) };
    if status != 0 {
        return Err(status_error(status));
    }
    Ok(())
}

/// Verifies the current HDU's CHECKSUM and DATASUM: an error if they do not match (which
/// is how corrupted bytes are caught before they are believed), or if they are missing and
/// `required`.
pub(crate) fn verify_checksum(f: &mut FitsFile, required: bool) -> std::result::Result<(), String> {
    let (mut data_ok, mut hdu_ok, mut status) = (0, 0, 0);
    // SAFETY: `f` is open and positioned on an HDU; the out-pointers are valid.
    unsafe { fitsio::sys::ffvcks(f.as_raw(), &mut data_ok, &mut hdu_ok, &mut status) };
    if status != 0 {
        return Err(status_error(status));
    }
    match (data_ok, hdu_ok) {
        (1, 1) => Ok(()),
        (0, 0) if !required => Ok(()),
        (0, _) | (_, 0) => Err("the HDU has no CHECKSUM/DATASUM".into()),
        _ => Err("checksum mismatch: the file is corrupted".into()),
    }
}
