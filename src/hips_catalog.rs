//! `aster hips catalog`: a progressive catalog HiPS (HiPS 1.0, section 4.3) of a catalog
//! table, e.g. the Object table, for Aladin and the portal's overlays. Rows are read through
//! the ADQL engine in order of brightness; each goes to the shallowest tile (from order 1)
//! holding fewer than `per_tile` rows, so the low orders show the brightest objects evenly
//! over the sky and each deeper order adds fainter ones; rows left at the deepest order all
//! stay there. Tiles are TSV with a header line; `metadata.xml` describes the columns as a
//! VOTable (positions by their UCDs), `NorderK/Allsky.tsv` gathers orders 1 to 3, and
//! `Moc.fits` is the coverage.
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};
use arrow::array::Array;
use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use aster_archive::catalog::CatalogStore;
use aster_archive::hips::{HipsTree, Properties, hips_dir, valid_id};
use aster_archive::query::QueryEngine;
use aster_archive::registry::coverage::Moc;
use aster_processing::hips::Tile;
use futures::StreamExt;

/// What to build.
#[derive(Debug, Clone)]
pub struct CatalogHipsOptions {
    /// HiPS ID (its directory under `<data dir>/hips`).
    pub id: String,
    /// Qualified table name.
    pub table: String,
    /// Columns of the tiles; the first is the identifier.
    pub columns: Vec<String>,
    pub ra: String,
    pub dec: String,
    /// ADQL ORDER BY clause: brightest first.
    pub order_by: String,
    pub per_tile: usize,
    pub max_order: u8,
}

impl Default for CatalogHipsOptions {
    fn default() -> Self {
        Self {
            id: "dp-object".into(),
            table: "dp.Object".into(),
            columns: [
                "objectId",
                "coord_ra",
                "coord_dec",
                "g_psfFlux",
                "r_psfFlux",
                "i_psfFlux",
                "refExtendedness",
            ]
            .map(String::from)
            .to_vec(),
            ra: "coord_ra".into(),
            dec: "coord_dec".into(),
            order_by: "r_psfFlux DESC".into(),
            per_tile: 100,
            max_order: 10,
        }
    }
}

/// Builds the catalog HiPS; returns the rows and tiles written.
pub async fn build(
    data_dir: &Path,
    store: &CatalogStore,
    opts: &CatalogHipsOptions,
) -> Result<(usize, usize)> {
    if !valid_id(&opts.id) {
        bail!("{}: HiPS IDs take letters, digits, - and _", opts.id);
    }
    if opts.per_tile == 0 || opts.max_order == 0 || opts.max_order > 20 {
        bail!("rows per tile must be at least 1, the deepest order from 1 to 20");
    }
    let mut columns = opts.columns.clone();
    for c in [&opts.ra, &opts.dec] {
        if !columns.contains(c) {
            columns.push(c.clone());
        }
    }
    let adql = format!(
        "SELECT {} FROM {} ORDER BY {}",
        columns.join(", "),
        opts.table,
        opts.order_by
    );
    let engine = QueryEngine::new(store.clone());
    let mut stream = engine
        .execute(&adql, Vec::new(), None, None)
        .await
        .with_context(|| format!("reading the catalog: {adql}"))?;
    let (ra_i, dec_i) = (
        columns.iter().position(|c| *c == opts.ra).expect("added"),
        columns.iter().position(|c| *c == opts.dec).expect("added"),
    );
    let mut tiles: HashMap<Tile, String> = HashMap::new();
    let mut counts: HashMap<Tile, usize> = HashMap::new();
    let mut cells: Vec<u64> = Vec::new();
    let mut schema = None;
    let mut rows = 0usize;
    let mut centre = (f64::NAN, f64::NAN);
    let format = FormatOptions::default().with_null("");
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        schema.get_or_insert_with(|| batch.schema());
        // Positions as doubles, whatever type the table stores them in: once per batch.
        let as_f64 = |k: usize| -> Result<arrow::array::Float64Array> {
            let a = arrow::compute::cast(batch.column(k), &DataType::Float64)?;
            Ok(a.as_any()
                .downcast_ref::<arrow::array::Float64Array>()
                .context("a cast to double")?
                .clone())
        };
        let (ra, dec) = (as_f64(ra_i)?, as_f64(dec_i)?);
        let value = |a: &arrow::array::Float64Array, i: usize| (!a.is_null(i)).then(|| a.value(i));
        let formatters: Vec<ArrayFormatter> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &format))
            .collect::<std::result::Result<_, _>>()?;
        for i in 0..batch.num_rows() {
            let (Some(a), Some(d)) = (value(&ra, i), value(&dec, i)) else {
                continue;
            };
            if !(-90.0..=90.0).contains(&d) || !a.is_finite() {
                continue;
            }
            let (lon, lat) = (a.rem_euclid(360.0).to_radians(), d.to_radians());
            let deepest = cdshealpix::nested::hash(opts.max_order, lon, lat);
            cells.push(deepest);
            // The shallowest tile with room, or the deepest one.
            let tile = (1..=opts.max_order)
                .map(|o| Tile {
                    order: o,
                    npix: deepest >> (2 * u32::from(opts.max_order - o)),
                })
                .find(|t| counts.get(t).copied().unwrap_or(0) < opts.per_tile)
                .unwrap_or(Tile {
                    order: opts.max_order,
                    npix: deepest,
                });
            *counts.entry(tile).or_default() += 1;
            let line = tiles.entry(tile).or_default();
            for (k, f) in formatters.iter().enumerate() {
                if k > 0 {
                    line.push('\t');
                }
                // Tabs and line ends inside values would break the TSV.
                let v = f.value(i).to_string();
                line.push_str(&v.replace(['\t', '\n', '\r'], " "));
            }
            line.push('\n');
            if rows == 0 {
                centre = (a, d);
            }
            rows += 1;
        }
    }
    let schema = schema.context("the table has no rows")?;
    if rows == 0 {
        bail!("no rows with a position in {}", opts.table);
    }
    let tree = HipsTree::new(hips_dir(data_dir).join(&opts.id));
    if tree.root().exists() {
        std::fs::remove_dir_all(tree.root())?;
    }
    let header = format!("{}\n", columns.join("\t"));
    let deepest_used = tiles.keys().map(|t| t.order).max().unwrap_or(1);
    for (tile, body) in &tiles {
        let path = tree.root().join(tile.path("tsv"));
        tree.write_file(&path, format!("{header}{body}").as_bytes())?;
    }
    // Allsky files of the low orders: every tile of the order in one file, so a client
    // showing the whole sky makes one request (HiPS 1.0, 4.3.2).
    for order in 1..=3u8.min(deepest_used) {
        let mut of_order: Vec<(&Tile, &String)> =
            tiles.iter().filter(|(t, _)| t.order == order).collect();
        of_order.sort_by_key(|(t, _)| t.npix);
        let body: String = of_order.into_iter().map(|(_, b)| b.as_str()).collect();
        tree.write_file(
            &tree.root().join(format!("Norder{order}/Allsky.tsv")),
            format!("{header}{body}").as_bytes(),
        )?;
    }
    tree.write_file(
        &tree.root().join("metadata.xml"),
        metadata_votable(&schema, opts).as_bytes(),
    )?;
    cells.sort_unstable();
    cells.dedup();
    let moc = Moc::from_cells(opts.max_order, &cells);
    tree.write_moc(&moc)?;
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%MZ").to_string();
    let mut p = Properties::new();
    p.set(
        "creator_did",
        format!("ivo://aster.survey/P/{}", opts.table.replace('.', "/")),
    )
    .set("obs_title", format!("Aster {}", opts.table))
    .set(
        "obs_description",
        format!(
            "Progressive catalog HiPS of {}: at most {} rows a tile from order 1, \
                 brightest first ({}).",
            opts.table, opts.per_tile, opts.order_by
        ),
    )
    .set("dataproduct_type", "catalog")
    .set("hips_version", "1.4")
    .set("hips_release_date", &now)
    .set("hips_creation_date", &now)
    .set(
        "hips_builder",
        format!("Aster {}", env!("CARGO_PKG_VERSION")),
    )
    .set("hips_status", "public master clonableOnce")
    .set("hips_frame", "equatorial")
    .set("hips_tile_format", "tsv")
    .set("hips_order", deepest_used)
    .set("hips_order_min", 1)
    .set("hips_cat_nrows", rows)
    .set("hips_nb_tiles", tiles.len())
    .set("moc_sky_fraction", format!("{:.6e}", moc.sky_fraction()))
    .set("hips_initial_ra", format!("{:.6}", centre.0))
    .set("hips_initial_dec", format!("{:.6}", centre.1))
    .set("hips_initial_fov", 1.0)
    .set("obs_regime", "Optical");
    tree.write_properties(&p)?;
    Ok((rows, tiles.len()))
}

/// The columns as a VOTable: positions and the identifier by their UCDs, as clients find
/// them.
fn metadata_votable(schema: &arrow::datatypes::Schema, opts: &CatalogHipsOptions) -> String {
    let mut fields = String::new();
    for (i, f) in schema.fields().iter().enumerate() {
        let (datatype, arraysize) = match f.data_type() {
            DataType::Int64 | DataType::UInt64 => ("long", None),
            DataType::Int32 | DataType::UInt32 => ("int", None),
            DataType::Int16 | DataType::UInt16 | DataType::Int8 | DataType::UInt8 => {
                ("short", None)
            }
            DataType::Float32 => ("float", None),
            DataType::Float64 => ("double", None),
            DataType::Boolean => ("boolean", None),
            _ => ("char", Some("*")),
        };
        let name = f.name();
        let ucd = if *name == opts.ra {
            Some("pos.eq.ra;meta.main")
        } else if *name == opts.dec {
            Some("pos.eq.dec;meta.main")
        } else if i == 0 {
            Some("meta.id;meta.main")
        } else {
            None
        };
        let unit = f
            .metadata()
            .get("unit")
            .cloned()
            .or_else(|| (*name == opts.ra || *name == opts.dec).then(|| "deg".to_string()));
        let esc = |s: &str| {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('"', "&quot;")
        };
        let _ = write!(
            fields,
            "      <FIELD name=\"{}\" datatype=\"{datatype}\"",
            esc(name)
        );
        if let Some(a) = arraysize {
            let _ = write!(fields, " arraysize=\"{a}\"");
        }
        if let Some(u) = ucd {
            let _ = write!(fields, " ucd=\"{u}\"");
        }
        if let Some(u) = unit.filter(|u| !u.is_empty()) {
            let _ = write!(fields, " unit=\"{}\"", esc(&u));
        }
        fields.push('>');
        if let Some(d) = f.metadata().get("description") {
            let _ = write!(fields, "<DESCRIPTION>{}</DESCRIPTION>", esc(d));
        }
        fields.push_str("</FIELD>\n");
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <VOTABLE version=\"1.4\" xmlns=\"http://www.ivoa.net/xml/VOTable/v1.3\">\n  \
         <RESOURCE>\n    <TABLE name=\"{}\">\n{fields}      <DATA><TABLEDATA></TABLEDATA></DATA>\n    \
         </TABLE>\n  </RESOURCE>\n</VOTABLE>\n",
        opts.table
    )
}
