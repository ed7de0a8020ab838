//! VOSI documents of the TAP service: capabilities (with TAPRegExt), availability and
//! tables (VODataService 1.1 tableset, with detail=min and single tables).
use aster_archive::tap_schema::{ColumnDesc, SchemaDesc, TableDesc};

use crate::formats::OutputFormat;
use crate::xml::escape;

/// User-defined functions as TAPRegExt declares them: (signature, description).
pub const UDFS: &[(&str, &str)] = &[
    (
        "ivo_healpix_index(hpxOrder INTEGER, ra DOUBLE PRECISION, dec DOUBLE PRECISION) -> BIGINT",
        "Nested HEALPix index of a position at the given order (0..29).",
    ),
    (
        "ivo_healpix_center(hpxOrder INTEGER, hpxIndex BIGINT) -> POINT",
        "Centre of a nested HEALPix cell.",
    ),
    (
        "ivo_hasword(haystack TEXT, needle TEXT) -> INTEGER",
        "1 if needle occurs as a whole word in haystack, case-insensitively.",
    ),
    (
        "ivo_nocasematch(value TEXT, pattern TEXT) -> INTEGER",
        "1 if value matches the LIKE pattern ignoring case.",
    ),
    (
        "ivo_string_agg(expr TEXT, delim TEXT) -> TEXT",
        "Aggregate: the values of expr joined by delim.",
    ),
    (
        "ivo_interval_overlaps(l1 DOUBLE PRECISION, h1 DOUBLE PRECISION, l2 DOUBLE PRECISION, h2 DOUBLE PRECISION) -> INTEGER",
        "1 if the intervals [l1, h1] and [l2, h2] overlap.",
    ),
    (
        "ivo_epoch_prop(ra DOUBLE PRECISION, dec DOUBLE PRECISION, parallax DOUBLE PRECISION, pmra DOUBLE PRECISION, pmdec DOUBLE PRECISION, radial_velocity DOUBLE PRECISION, ref_epoch DOUBLE PRECISION, out_epoch DOUBLE PRECISION) -> DOUBLE PRECISION(6)",
        "Astrometric parameters propagated from ref_epoch to out_epoch (Julian years): ra, dec (deg), parallax (mas), pmra, pmdec (mas/yr), radial velocity (km/s).",
    ),
    (
        "ivo_epoch_prop_pos(ra DOUBLE PRECISION, dec DOUBLE PRECISION, parallax DOUBLE PRECISION, pmra DOUBLE PRECISION, pmdec DOUBLE PRECISION, radial_velocity DOUBLE PRECISION, ref_epoch DOUBLE PRECISION, out_epoch DOUBLE PRECISION) -> POINT",
        "Position propagated from ref_epoch to out_epoch.",
    ),
    (
        "nJy_to_abmag(flux DOUBLE PRECISION) -> DOUBLE PRECISION",
        "AB magnitude of a flux in nJy (NULL for non-positive fluxes).",
    ),
    (
        "nJy_to_abmag_err(flux DOUBLE PRECISION, fluxErr DOUBLE PRECISION) -> DOUBLE PRECISION",
        "AB magnitude error from a flux and its error in nJy.",
    ),
    (
        "abmag_to_nJy(mag DOUBLE PRECISION) -> DOUBLE PRECISION",
        "Flux in nJy of an AB magnitude.",
    ),
    (
        "ab_color(flux1 DOUBLE PRECISION, flux2 DOUBLE PRECISION) -> DOUBLE PRECISION",
        "AB colour m1 - m2 of two fluxes in nJy.",
    ),
    (
        "reduced_chi2(chi2 DOUBLE PRECISION, ndata INTEGER, nparam INTEGER) -> DOUBLE PRECISION",
        "Chi-square per degree of freedom, chi2 / (ndata - nparam).",
    ),
];

const GEOMETRY: &[&str] = &[
    "POINT",
    "CIRCLE",
    "BOX",
    "POLYGON",
    "CONTAINS",
    "INTERSECTS",
    "DISTANCE",
    "AREA",
    "COORD1",
    "COORD2",
    "COORDSYS",
    "CENTROID",
    "REGION",
];

/// The limits TAPRegExt declares: rows, upload size, and, for the caller asking, the
/// execution duration of async jobs (the service's, lowered by the caller's allocation) and
/// how long jobs are kept.
#[derive(Debug, Clone, Copy)]
pub struct DeclaredLimits {
    pub default_maxrec: u64,
    pub max_maxrec: u64,
    pub max_upload: usize,
    pub default_duration: u64,
    pub hard_duration: u64,
    pub retention_secs: u64,
}

pub fn capabilities(base: &str, l: DeclaredLimits) -> String {
    let DeclaredLimits {
        default_maxrec,
        max_maxrec,
        max_upload,
        default_duration,
        hard_duration,
        retention_secs,
    } = l;
    let mut x = String::from(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<vosi:capabilities xmlns:vosi="http://www.ivoa.net/xml/VOSICapabilities/v1.0" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:vs="http://www.ivoa.net/xml/VODataService/v1.1" xmlns:vr="http://www.ivoa.net/xml/VOResource/v1.0" xmlns:tr="http://www.ivoa.net/xml/TAPRegExt/v1.0">
"#,
    );
    for (std, path) in [
        ("ivo://ivoa.net/std/VOSI#capabilities", "capabilities"),
        ("ivo://ivoa.net/std/VOSI#availability", "availability"),
        ("ivo://ivoa.net/std/VOSI#tables-1.1", "tables"),
    ] {
        x.push_str(&format!(
            "  <capability standardID=\"{std}\">\n    <interface xsi:type=\"vs:ParamHTTP\" role=\"std\">\n      <accessURL use=\"full\">{}/{path}</accessURL>\n    </interface>\n  </capability>\n",
            escape(base)
        ));
    }
    x.push_str(&format!(
        "  <capability standardID=\"ivo://ivoa.net/std/DALI#examples\">\n    <interface xsi:type=\"vr:WebBrowser\">\n      <accessURL use=\"full\">{}/examples</accessURL>\n    </interface>\n  </capability>\n",
        escape(base)
    ));
    x.push_str(&format!(
        "  <capability standardID=\"ivo://ivoa.net/std/TAP\" xsi:type=\"tr:TableAccess\">\n    <interface xsi:type=\"vs:ParamHTTP\" role=\"std\" version=\"1.1\">\n      <accessURL use=\"base\">{}</accessURL>\n    </interface>\n",
        escape(base)
    ));
    // ivoa.ObsCore holds every mandatory ObsCore 1.1 column (taplint's OBS stage checks it).
    x.push_str(
        "    <dataModel ivo-id=\"ivo://ivoa.net/std/ObsCore#core-1.1\">ObsCore-1.1</dataModel>\n",
    );
    x.push_str("    <language>\n      <name>ADQL</name>\n      <version ivo-id=\"ivo://ivoa.net/std/ADQL#v2.0\">2.0</version>\n      <version ivo-id=\"ivo://ivoa.net/std/ADQL#v2.1\">2.1</version>\n      <description>ADQL 2.1, translated to Apache DataFusion plans</description>\n");
    x.push_str("      <languageFeatures type=\"ivo://ivoa.net/std/TAPRegExt#features-udf\">\n");
    for (sig, desc) in UDFS {
        x.push_str(&format!("        <feature>\n          <form>{}</form>\n          <description>{}</description>\n        </feature>\n", escape(sig), escape(desc)));
    }
    x.push_str("      </languageFeatures>\n      <languageFeatures type=\"ivo://ivoa.net/std/TAPRegExt#features-adqlgeo\">\n");
    for g in GEOMETRY {
        x.push_str(&format!("        <feature><form>{g}</form></feature>\n"));
    }
    x.push_str("      </languageFeatures>\n");
    let groups: &[(&str, &[&str])] = &[
        (
            "ivo://ivoa.net/std/TAPRegExt#features-adql-string",
            &["LOWER", "UPPER", "ILIKE"],
        ),
        (
            "ivo://ivoa.net/std/TAPRegExt#features-adql-sets",
            &["UNION", "EXCEPT", "INTERSECT"],
        ),
        (
            "ivo://ivoa.net/std/TAPRegExt#features-adql-common-table",
            &["WITH"],
        ),
        ("ivo://ivoa.net/std/TAPRegExt#features-adql-type", &["CAST"]),
        (
            "ivo://ivoa.net/std/TAPRegExt#features-adql-offset",
            &["OFFSET"],
        ),
        (
            "ivo://ivoa.net/std/TAPRegExt#features-adql-bitwise",
            &["BIT_AND", "BIT_OR", "BIT_XOR", "BIT_NOT"],
        ),
    ];
    for (t, forms) in groups {
        x.push_str(&format!("      <languageFeatures type=\"{t}\">\n"));
        for f in *forms {
            x.push_str(&format!("        <feature><form>{f}</form></feature>\n"));
        }
        x.push_str("      </languageFeatures>\n");
    }
    x.push_str("    </language>\n");
    for f in OutputFormat::all() {
        x.push_str(&format!(
            "    <outputFormat{}>\n      <mime>{}</mime>\n",
            f.standard_id()
                .map(|s| format!(" ivo-id=\"{s}\""))
                .unwrap_or_default(),
            escape(f.capability_mime())
        ));
        for a in f.capability_aliases() {
            x.push_str(&format!("      <alias>{a}</alias>\n"));
        }
        x.push_str("    </outputFormat>\n");
    }
    x.push_str(&format!(
        "    <uploadMethod ivo-id=\"ivo://ivoa.net/std/TAPRegExt#upload-inline\"/>\n    <uploadMethod ivo-id=\"ivo://ivoa.net/std/TAPRegExt#upload-http\"/>\n    <uploadMethod ivo-id=\"ivo://ivoa.net/std/TAPRegExt#upload-https\"/>\n    <retentionPeriod>\n      <default>{retention_secs}</default>\n    </retentionPeriod>\n    <executionDuration>\n      <default>{default_duration}</default>\n      <hard>{hard_duration}</hard>\n    </executionDuration>\n    <outputLimit>\n      <default unit=\"row\">{default_maxrec}</default>\n      <hard unit=\"row\">{max_maxrec}</hard>\n    </outputLimit>\n    <uploadLimit>\n      <hard unit=\"byte\">{max_upload}</hard>\n    </uploadLimit>\n  </capability>\n</vosi:capabilities>\n"
    ));
    x
}

pub fn availability(note: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<vosi:availability xmlns:vosi=\"http://www.ivoa.net/xml/VOSIAvailability/v1.0\">\n  <vosi:available>true</vosi:available>\n  <vosi:note>{}</vosi:note>\n</vosi:availability>\n",
        escape(note)
    )
}

fn opt_elem(x: &mut String, indent: &str, name: &str, v: &Option<String>) {
    if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
        x.push_str(&format!("{indent}<{name}>{}</{name}>\n", escape(v)));
    }
}

fn column(x: &mut String, c: &ColumnDesc) {
    x.push_str("      <column>\n");
    x.push_str(&format!("        <name>{}</name>\n", escape(&c.name)));
    opt_elem(x, "        ", "description", &c.description);
    opt_elem(x, "        ", "unit", &c.unit);
    opt_elem(x, "        ", "ucd", &c.ucd);
    opt_elem(x, "        ", "utype", &c.utype);
    let arraysize = c
        .arraysize
        .as_ref()
        .map(|a| format!(" arraysize=\"{}\"", escape(a)))
        .unwrap_or_default();
    let xtype = c
        .xtype
        .as_ref()
        .map(|a| format!(" extendedType=\"{}\"", escape(a)))
        .unwrap_or_default();
    x.push_str(&format!(
        "        <dataType xsi:type=\"vs:VOTableType\"{arraysize}{xtype}>{}</dataType>\n",
        c.datatype
    ));
    if c.indexed {
        x.push_str("        <flag>indexed</flag>\n");
    }
    if c.principal {
        x.push_str("        <flag>principal</flag>\n");
    }
    if c.std {
        x.push_str("        <flag>std</flag>\n");
    }
    x.push_str("      </column>\n");
}

fn table(x: &mut String, t: &TableDesc, detail: bool, tag: &str) {
    x.push_str(&format!(
        "    <{tag} type=\"{}\">\n      <name>{}</name>\n",
        if t.table_type == "view" {
            "view"
        } else {
            "table"
        },
        escape(&t.name)
    ));
    opt_elem(x, "      ", "description", &t.description);
    if detail {
        for c in &t.columns {
            column(x, c);
        }
        for k in &t.keys {
            x.push_str(&format!(
                "      <foreignKey>\n        <targetTable>{}</targetTable>\n",
                escape(&k.target_table)
            ));
            for (f, tcol) in &k.columns {
                x.push_str(&format!("        <fkColumn>\n          <fromColumn>{}</fromColumn>\n          <targetColumn>{}</targetColumn>\n        </fkColumn>\n", escape(f), escape(tcol)));
            }
            x.push_str("      </foreignKey>\n");
        }
    }
    x.push_str(&format!("    </{tag}>\n"));
}

const NS: &str = "xmlns:vosi=\"http://www.ivoa.net/xml/VOSITables/v1.0\" xmlns:vs=\"http://www.ivoa.net/xml/VODataService/v1.1\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"";

/// The tableset; with `detail` false only schema and table names and descriptions.
pub fn tableset(schemas: &[SchemaDesc], detail: bool) -> String {
    let mut x = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<vosi:tableset {NS}>\n");
    for s in schemas {
        x.push_str(&format!(
            "  <schema>\n    <name>{}</name>\n",
            escape(&s.name)
        ));
        opt_elem(&mut x, "    ", "description", &s.description);
        for t in &s.tables {
            table(&mut x, t, detail, "table");
        }
        x.push_str("  </schema>\n");
    }
    x.push_str("</vosi:tableset>\n");
    x
}

/// One table's document (VOSI-tables 1.1 `/tables/<name>`).
pub fn single_table(t: &TableDesc) -> String {
    let mut x = String::new();
    table(&mut x, t, true, "vosi:table");
    let body = x.replacen("<vosi:table ", &format!("<vosi:table {NS} "), 1);
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{}",
        body.trim_start()
    )
}

/// Example queries (DALI examples: XHTML with RDFa), shown to users by TOPCAT and others.
pub const EXAMPLES: &[(&str, &str, &str)] = &[
    (
        "cone",
        "Cone search on the Object table",
        "SELECT objectId, coord_ra, coord_dec, nJy_to_abmag(r_psfFlux) AS r_mag\nFROM dp.Object\nWHERE CONTAINS(POINT('ICRS', coord_ra, coord_dec), CIRCLE('ICRS', 62.0, -37.0, 0.1)) = 1",
    ),
    (
        "colour-cut",
        "Bright blue stars by AB colour",
        "SELECT TOP 100 objectId, ab_color(g_psfFlux, r_psfFlux) AS g_r\nFROM dp.Object\nWHERE refExtendedness = 0 AND r_psfFlux > abmag_to_nJy(20)\nORDER BY g_r",
    ),
    (
        "light-curve",
        "Light curve of one DIAObject",
        "SELECT s.midpointMjdTai, s.band, s.psfFlux, s.psfFluxErr\nFROM ap.DiaSource AS s\nWHERE s.diaObjectId IN (SELECT TOP 1 diaObjectId FROM ap.DiaObject ORDER BY nDiaSources DESC)\nORDER BY midpointMjdTai",
    ),
    (
        "healpix-counts",
        "Object counts per HEALPix cell",
        "SELECT ivo_healpix_index(6, coord_ra, coord_dec) AS hpx6, COUNT(*) AS n\nFROM dp.Object\nGROUP BY hpx6",
    ),
];

pub fn examples() -> String {
    let mut x = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\">\n<head><title>Aster TAP examples</title></head>\n<body vocab=\"http://www.ivoa.net/rdf/examples#\">\n<h1>Aster TAP examples</h1>\n",
    );
    for (id, name, query) in EXAMPLES {
        x.push_str(&format!(
            "<div typeof=\"example\" id=\"{id}\" resource=\"#{id}\">\n<h2 property=\"name\">{}</h2>\n<pre property=\"query\">{}</pre>\n</div>\n",
            escape(name),
            escape(query)
        ));
    }
    x.push_str("</body>\n</html>\n");
    x
}
