//! HiPS `properties` files and HiPS lists: `keyword = value` lines in UTF-8, `#` comments,
//! blank lines ignored; a HiPS list is the properties of each HiPS of a node, separated by
//! blank lines, each with where it is served (`hips_service_url`).

/// The keywords every HiPS must have (HiPS 1.0, section 4.4.1), with `hips_tile_width`,
/// which its keyword table marks required too.
pub const MANDATORY: [&str; 10] = [
    "creator_did",
    "obs_title",
    "dataproduct_type",
    "hips_version",
    "hips_release_date",
    "hips_status",
    "hips_tile_format",
    "hips_order",
    "hips_frame",
    "hips_tile_width",
];

/// The keywords each record of a HiPS list must have.
pub const LIST_MANDATORY: [&str; 4] = [
    "creator_did",
    "hips_release_date",
    "hips_service_url",
    "hips_status",
];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PropertiesError {
    #[error("line {0}: expected keyword = value")]
    Syntax(usize),
    #[error("line {0}: a keyword has no spaces or '='")]
    BadKeyword(usize),
    #[error("the mandatory keyword {0} is missing")]
    Missing(&'static str),
    #[error("{0} = {1}: {2}")]
    BadValue(String, String, &'static str),
}

/// The keywords of one HiPS in order (some may repeat).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Properties(Vec<(String, String)>);

impl Properties {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a keyword, replacing any earlier value.
    pub fn set(&mut self, key: &str, value: impl ToString) -> &mut Self {
        let value = value.to_string().replace(['\n', '\r'], " ");
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => self.0.push((key.to_string(), value)),
        }
        self
    }

    /// Removes every value of a keyword.
    pub fn remove(&mut self, key: &str) -> &mut Self {
        self.0.retain(|(k, _)| k != key);
        self
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn entries(&self) -> &[(String, String)] {
        &self.0
    }

    pub fn parse(text: &str) -> Result<Self, PropertiesError> {
        let mut out = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line.split_once('=').ok_or(PropertiesError::Syntax(n + 1))?;
            let k = k.trim();
            if k.is_empty() || k.contains(char::is_whitespace) {
                return Err(PropertiesError::BadKeyword(n + 1));
            }
            out.push((k.to_string(), v.trim().to_string()));
        }
        Ok(Self(out))
    }

    /// Checks the mandatory keywords and the values whose form the standard fixes.
    pub fn validate(&self) -> Result<(), PropertiesError> {
        let catalog = self.get("dataproduct_type") == Some("catalog");
        for key in MANDATORY {
            // Tiles of a catalog have rows, not a width.
            if catalog && key == "hips_tile_width" {
                continue;
            }
            if self.get(key).is_none_or(str::is_empty) {
                return Err(PropertiesError::Missing(key));
            }
        }
        let bad = |k: &str, why| {
            PropertiesError::BadValue(k.to_string(), self.get(k).unwrap_or("").to_string(), why)
        };
        let ptype = self.get("dataproduct_type").unwrap_or("");
        if !["image", "catalog", "cube"].contains(&ptype) {
            return Err(bad("dataproduct_type", "not image, catalog or cube"));
        }
        let formats: Vec<&str> = self
            .get("hips_tile_format")
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let allowed: &[&str] = if ptype == "catalog" {
            &["tsv"]
        } else {
            &["fits", "png", "jpeg"]
        };
        if formats.is_empty() || formats.iter().any(|f| !allowed.contains(f)) {
            return Err(bad(
                "hips_tile_format",
                "not a list of the formats this type allows",
            ));
        }
        let int = |k: &str| self.get(k).and_then(|v| v.parse::<u32>().ok());
        if int("hips_order").is_none_or(|o| o > 29) {
            return Err(bad("hips_order", "not an order from 0 to 29"));
        }
        if !catalog && int("hips_tile_width").is_none_or(|w| !w.is_power_of_two()) {
            return Err(bad("hips_tile_width", "not a power of two"));
        }
        if !["equatorial", "galactic", "ecliptic"].contains(&self.get("hips_frame").unwrap_or("")) {
            return Err(bad("hips_frame", "not equatorial, galactic or ecliptic"));
        }
        let date = self.get("hips_release_date").unwrap_or("");
        if chrono::NaiveDateTime::parse_from_str(date, "%Y-%m-%dT%H:%MZ").is_err() {
            return Err(bad("hips_release_date", "not YYYY-mm-ddTHH:MMZ"));
        }
        let status: Vec<&str> = self
            .get("hips_status")
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let known = [
            "private",
            "public",
            "master",
            "mirror",
            "partial",
            "clonable",
            "unclonable",
            "clonableOnce",
        ];
        if status.iter().any(|s| !known.contains(s)) {
            return Err(bad(
                "hips_status",
                "has a word the standard does not define",
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for Properties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (k, v) in &self.0 {
            writeln!(f, "{k:<20} = {v}")?;
        }
        Ok(())
    }
}

/// A HiPS list: each HiPS's properties with its service URL, separated by blank lines.
pub fn hips_list(entries: &[(Properties, String)]) -> String {
    let mut out = String::from("# HiPS list of this Aster archive\n\n");
    for (props, url) in entries {
        let mut p = props.clone();
        p.set("hips_service_url", url);
        out.push_str(&p.to_string());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete() -> Properties {
        let mut p = Properties::new();
        p.set("creator_did", "ivo://aster.survey/P/deep/r")
            .set("obs_title", "Aster deep r")
            .set("dataproduct_type", "image")
            .set("hips_version", "1.4")
            .set("hips_release_date", "2026-11-26T04:00Z")
            .set("hips_status", "public master clonableOnce")
            .set("hips_tile_format", "fits png jpeg")
            .set("hips_order", 11)
            .set("hips_frame", "equatorial")
            .set("hips_tile_width", 512);
        p
    }

    #[test]
    fn properties_round_trip_and_validate() {
        let p = complete();
        assert_eq!(p.validate(), Ok(()));
        let text = p.to_string();
        assert_eq!(
            Properties::parse(&format!("# comment\n\n{text}")).unwrap(),
            p
        );
        let mut missing = p.clone();
        missing.0.retain(|(k, _)| k != "hips_frame");
        assert_eq!(
            missing.validate(),
            Err(PropertiesError::Missing("hips_frame"))
        );
        let mut bad = p.clone();
        bad.set("hips_tile_width", 500);
        assert!(matches!(bad.validate(), Err(PropertiesError::BadValue(..))));
        bad = p.clone();
        bad.set("hips_tile_format", "tsv");
        assert!(bad.validate().is_err());
        assert_eq!(
            Properties::parse("no equals"),
            Err(PropertiesError::Syntax(1))
        );
        assert_eq!(
            Properties::parse("a b = c"),
            Err(PropertiesError::BadKeyword(1))
        );
    }

    #[test]
    fn a_hips_list_has_a_record_per_hips_with_its_url() {
        let list = hips_list(&[
            (complete(), "http://h/hips/a".into()),
            (complete(), "http://h/hips/b".into()),
        ]);
        let records: Vec<Properties> = list
            .split("\n\n")
            .filter(|r| !r.trim().is_empty() && !r.trim_start().starts_with('#'))
            .map(|r| Properties::parse(r).unwrap())
            .collect();
        assert_eq!(records.len(), 2);
        for r in &records {
            for k in LIST_MANDATORY {
                assert!(r.get(k).is_some(), "{k}");
            }
        }
        assert_eq!(records[1].get("hips_service_url"), Some("http://h/hips/b"));
    }
}
