//! Tests of the result writers: round trips of every format with every type and nulls,
//! streaming across batches, status endings, escaping and size bounds.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Date32Array, Decimal128Array,
    FixedSizeListBuilder, Float32Array, Float32Builder, Float64Array, Float64Builder, Int8Array,
    Int16Array, Int32Array, Int32Builder, Int64Array, LargeStringArray, ListBuilder, NullArray,
    StringArray, StringViewArray, TimestampMicrosecondArray, TimestampNanosecondArray, UInt8Array,
    UInt16Array, UInt32Array, UInt64Array,
};
use arrow::datatypes::{
    DataType, Field, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Schema, SchemaRef,
    UInt8Type,
};
use arrow::record_batch::RecordBatch;
use aster_archive::formats::{ImportedTable, read_fits_table, read_votable};

use super::*;

fn with_meta(field: Field, pairs: &[(&str, &str)]) -> Field {
    let metadata: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    field.with_metadata(metadata)
}

/// A schema with every supported type.
fn schema() -> SchemaRef {
    let point_item = Arc::new(Field::new_list_field(DataType::Float64, true));
    Arc::new(Schema::new(vec![
        Field::new("b", DataType::Boolean, true),
        Field::new("i8", DataType::Int8, true),
        Field::new("i16", DataType::Int16, true),
        with_meta(
            Field::new("i32", DataType::Int32, true),
            &[("description", "an <int> & co")],
        ),
        Field::new("i64", DataType::Int64, true),
        Field::new("u8", DataType::UInt8, true),
        Field::new("u16", DataType::UInt16, true),
        Field::new("u32", DataType::UInt32, true),
        Field::new("u64", DataType::UInt64, true),
        with_meta(
            Field::new("f32", DataType::Float32, true),
            &[("unit", "mag"), ("ucd", "phot.mag")],
        ),
        with_meta(
            Field::new("ra", DataType::Float64, true),
            &[
                ("unit", "deg"),
                ("ucd", "pos.eq.ra;meta.main"),
                ("utype", "stc:AstroCoords.Position2D.Value2.C1"),
                ("description", "Right ascension (ICRS)"),
            ],
        ),
        Field::new("s", DataType::Utf8, true),
        Field::new("ls", DataType::LargeUtf8, true),
        Field::new("sv", DataType::Utf8View, true),
        Field::new("bin", DataType::Binary, true),
        Field::new(
            "ts",
            DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new(
            "tsn",
            DataType::Timestamp(arrow::datatypes::TimeUnit::Nanosecond, None),
            true,
        ),
        Field::new("d", DataType::Date32, true),
        Field::new("dec", DataType::Decimal128(10, 2), true),
        with_meta(
            Field::new("pt", DataType::FixedSizeList(point_item, 2), true),
            &[("xtype", "point"), ("unit", "deg")],
        ),
        with_meta(
            Field::new(
                "poly",
                DataType::List(Arc::new(Field::new_list_field(DataType::Float64, true))),
                true,
            ),
            &[("xtype", "polygon")],
        ),
        Field::new(
            "li",
            DataType::List(Arc::new(Field::new_list_field(DataType::Int32, true))),
            true,
        ),
        Field::new(
            "lf",
            DataType::List(Arc::new(Field::new_list_field(DataType::Float32, true))),
            true,
        ),
        Field::new("n", DataType::Null, true),
    ]))
}

const S0: &str = "a<b> & \"c\" 'd' é\ttab";

/// Three rows: ordinary values, all nulls, edge values.
fn batch() -> RecordBatch {
    let mut pt = FixedSizeListBuilder::new(Float64Builder::new(), 2);
    pt.values().append_slice(&[10.5, -20.25]);
    pt.append(true);
    pt.values().append_slice(&[0.0, 0.0]);
    pt.append(false);
    pt.values().append_slice(&[359.999_999_999, 89.5]);
    pt.append(true);
    let mut poly = ListBuilder::new(Float64Builder::new());
    poly.values().append_slice(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    poly.append(true);
    poly.append(false);
    poly.values().append_value(f64::NAN);
    poly.values().append_null();
    poly.append(true);
    let mut li = ListBuilder::new(Int32Builder::new());
    li.values().append_slice(&[1, -2, 3]);
    li.append(true);
    li.append(false);
    li.values().append_null();
    li.values().append_value(i32::MAX);
    li.append(true);
    let mut lf = ListBuilder::new(Float32Builder::new());
    lf.values().append_slice(&[0.1, 2.5]);
    lf.append(true);
    lf.append(false);
    lf.append(true);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(BooleanArray::from(vec![Some(true), None, Some(false)])),
        Arc::new(Int8Array::from(vec![Some(-8), None, Some(i8::MIN)])),
        Arc::new(Int16Array::from(vec![Some(-16), None, Some(i16::MAX)])),
        Arc::new(Int32Array::from(vec![Some(-32), None, Some(i32::MAX)])),
        Arc::new(Int64Array::from(vec![Some(-64), None, Some(i64::MAX)])),
        Arc::new(UInt8Array::from(vec![Some(8), None, Some(254)])),
        Arc::new(UInt16Array::from(vec![Some(16), None, Some(u16::MAX)])),
        Arc::new(UInt32Array::from(vec![Some(32), None, Some(u32::MAX)])),
        Arc::new(UInt64Array::from(vec![
            Some(64),
            None,
            Some(i64::MAX as u64),
        ])),
        Arc::new(Float32Array::from(vec![Some(0.1), None, Some(f32::NAN)])),
        Arc::new(Float64Array::from(vec![
            Some(0.1 + 0.2),
            None,
            Some(f64::INFINITY),
        ])),
        Arc::new(StringArray::from(vec![Some(S0), None, Some("")])),
        Arc::new(LargeStringArray::from(vec![
            Some("large"),
            None,
            Some("line1\nline2"),
        ])),
        Arc::new(StringViewArray::from(vec![Some("view"), None, Some("a,b")])),
        Arc::new(BinaryArray::from(vec![
            Some(&[1u8, 2, 255][..]),
            None,
            Some(&[][..]),
        ])),
        Arc::new(
            TimestampMicrosecondArray::from(vec![Some(1_600_000_000_123_456), None, Some(0)])
                .with_timezone("UTC"),
        ),
        Arc::new(TimestampNanosecondArray::from(vec![
            Some(1_600_000_000_000_000_000),
            None,
            Some(-1),
        ])),
        Arc::new(Date32Array::from(vec![Some(18_000), None, Some(-1)])),
        Arc::new(
            Decimal128Array::from(vec![Some(12_345), None, Some(-1)])
                .with_precision_and_scale(10, 2)
                .unwrap(),
        ),
        Arc::new(pt.finish()),
        Arc::new(poly.finish()),
        Arc::new(li.finish()),
        Arc::new(lf.finish()),
        Arc::new(NullArray::new(3)),
    ];
    RecordBatch::try_new(schema(), columns).expect("fixture batch")
}

fn info() -> ResultInfo {
    ResultInfo {
        query: Some("SELECT * FROM t WHERE x < 1 AND s = 'a&b'\n-- end".into()),
        table_name: "result".into(),
        extra_infos: vec![
            ("request".into(), "doQuery".into()),
            ("base".into(), "https://example.org/tap?a=1&b=2".into()),
        ],
    }
}

/// Runs an encoder over `batches`, returning the whole output and the number of chunks
/// `drain_tail` produced.
fn encode_with(
    format: OutputFormat,
    schema: &Schema,
    batches: &[RecordBatch],
    status: &QueryStatus,
) -> Result<(Vec<u8>, usize), FormatError> {
    let mut enc = encoder(format);
    let mut out = Vec::new();
    let mut body = Vec::new();
    enc.begin(schema, &info(), &mut out)?;
    body.append(&mut out);
    for b in batches {
        enc.batch(b, &mut out)?;
        body.append(&mut out);
    }
    enc.finish(status, &mut out)?;
    body.append(&mut out);
    let mut chunks = 0;
    loop {
        let more = enc.drain_tail(&mut out)?;
        assert!(out.len() <= 1 << 21, "drain_tail must emit bounded chunks");
        if !out.is_empty() {
            chunks += 1;
        }
        body.append(&mut out);
        if !more {
            break;
        }
    }
    Ok((body, chunks))
}

fn encode(format: OutputFormat, batches: &[RecordBatch], status: &QueryStatus) -> Vec<u8> {
    encode_with(format, &schema(), batches, status)
        .expect("encoding succeeds")
        .0
}

fn col(table: &ImportedTable, name: &str) -> ArrayRef {
    let i = table.schema.index_of(name).expect("column present");
    let arrays: Vec<&dyn Array> = table.batches.iter().map(|b| b.column(i).as_ref()).collect();
    arrow::compute::concat(&arrays).expect("concat")
}

fn meta<'a>(table: &'a ImportedTable, name: &str, key: &str) -> Option<&'a str> {
    table
        .schema
        .field_with_name(name)
        .ok()?
        .metadata()
        .get(key)
        .map(String::as_str)
}

fn list_f64(array: &ArrayRef, row: usize) -> Vec<f64> {
    let list = array.as_list::<i32>();
    list.value(row)
        .as_primitive::<Float64Type>()
        .iter()
        .map(|v| v.unwrap_or(f64::NAN))
        .collect()
}

fn strings(array: &ArrayRef) -> Vec<Option<String>> {
    array
        .as_string::<i32>()
        .iter()
        .map(|s| s.map(str::to_owned))
        .collect()
}

/// Checks a VOTable or FITS read-back of the fixture. `blank_is_null`: the format cannot
/// tell an empty string from null; `int_array_nulls`: it keeps null elements of integer arrays.
fn check_read_back(t: &ImportedTable, blank_is_null: bool, int_array_nulls: bool) {
    let b = col(t, "b");
    assert!(b.as_boolean().value(0) && b.is_null(1) && !b.as_boolean().value(2));
    let i8c = col(t, "i8");
    assert_eq!(i8c.as_primitive::<Int16Type>().value(2), i16::from(i8::MIN));
    assert!(i8c.is_null(1));
    assert_eq!(col(t, "i32").as_primitive::<Int32Type>().value(2), i32::MAX);
    let i64c = col(t, "i64");
    assert_eq!(i64c.as_primitive::<Int64Type>().value(2), i64::MAX);
    assert!(i64c.is_null(1));
    assert_eq!(col(t, "u8").as_primitive::<UInt8Type>().value(2), 254);
    assert_eq!(
        col(t, "u16").as_primitive::<Int32Type>().value(2),
        i32::from(u16::MAX)
    );
    assert_eq!(
        col(t, "u32").as_primitive::<Int64Type>().value(2),
        i64::from(u32::MAX)
    );
    assert_eq!(col(t, "u64").as_primitive::<Int64Type>().value(2), i64::MAX);
    let f32c = col(t, "f32");
    assert_eq!(f32c.as_primitive::<Float32Type>().value(0), 0.1);
    assert!(
        f32c.is_null(1) && f32c.is_null(2),
        "null and NaN read as null"
    );
    let ra = col(t, "ra");
    assert_eq!(ra.as_primitive::<Float64Type>().value(0), 0.1 + 0.2);
    assert_eq!(ra.as_primitive::<Float64Type>().value(2), f64::INFINITY);
    let s = strings(&col(t, "s"));
    assert_eq!(s[0].as_deref(), Some(S0));
    assert_eq!(s[1], None);
    if !blank_is_null {
        assert_eq!(s[2].as_deref(), Some(""));
    }
    assert_eq!(strings(&col(t, "ls"))[2].as_deref(), Some("line1\nline2"));
    assert_eq!(strings(&col(t, "sv"))[0].as_deref(), Some("view"));
    let ts = strings(&col(t, "ts"));
    assert_eq!(ts[0].as_deref(), Some("2020-09-13T12:26:40.123456"));
    assert_eq!(ts[2].as_deref(), Some("1970-01-01T00:00:00"));
    let tsn = strings(&col(t, "tsn"));
    assert_eq!(tsn[2].as_deref(), Some("1969-12-31T23:59:59.999999999"));
    let d = strings(&col(t, "d"));
    assert_eq!(d[0].as_deref(), Some("2019-04-14"));
    assert_eq!(d[2].as_deref(), Some("1969-12-31"));
    assert_eq!(meta(t, "d", "xtype"), Some("timestamp"));
    let dec = col(t, "dec");
    assert_eq!(dec.as_primitive::<Float64Type>().value(0), 123.45);
    let pt = col(t, "pt");
    assert_eq!(list_f64(&pt, 0), vec![10.5, -20.25]);
    assert_eq!(list_f64(&pt, 2), vec![359.999_999_999, 89.5]);
    assert_eq!(meta(t, "pt", "xtype"), Some("point"));
    let poly = col(t, "poly");
    assert_eq!(list_f64(&poly, 0), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let edge = list_f64(&poly, 2);
    assert!(edge.len() == 2 && edge.iter().all(|v| v.is_nan()));
    let li = col(t, "li");
    let li2: Vec<Option<i64>> = li
        .as_list::<i32>()
        .value(2)
        .as_primitive::<Int64Type>()
        .iter()
        .collect();
    let null_elem = if int_array_nulls {
        None
    } else {
        Some(i64::MIN)
    };
    assert_eq!(li2, vec![null_elem, Some(i64::from(i32::MAX))]);
    let lf = col(t, "lf");
    // Single precision survives, whether widened in binary or re-parsed from text.
    let lf0: Vec<f32> = list_f64(&lf, 0).iter().map(|v| *v as f32).collect();
    assert_eq!(lf0, vec![0.1f32, 2.5]);
    assert!(col(t, "n").is_null(0));
    assert_eq!(meta(t, "ra", "unit"), Some("deg"));
    assert_eq!(meta(t, "ra", "ucd"), Some("pos.eq.ra;meta.main"));
    assert_eq!(meta(t, "f32", "ucd"), Some("phot.mag"));
}

#[test]
fn from_param_accepts_tap_spellings() {
    use OutputFormat::*;
    for (s, f) in [
        ("votable", VotableBinary2),
        ("VOTable", VotableBinary2),
        ("application/x-votable+xml", VotableBinary2),
        (
            "application/x-votable+xml;serialization=binary2",
            VotableBinary2,
        ),
        (
            "application/x-votable+xml; serialization=BINARY2",
            VotableBinary2,
        ),
        (
            "application/x-votable+xml;serialization=TABLEDATA",
            VotableTabledata,
        ),
        ("text/xml", VotableBinary2),
        ("votable/td", VotableTabledata),
        ("votable/b2", VotableBinary2),
        ("csv", Csv),
        ("text/csv", Csv),
        ("text/csv;header=present", Csv),
        ("TSV", Tsv),
        ("text/tab-separated-values", Tsv),
        ("fits", Fits),
        ("application/fits", Fits),
        ("parquet", Parquet),
        ("application/vnd.apache.parquet", Parquet),
        ("json", Json),
        ("application/json", Json),
    ] {
        assert_eq!(OutputFormat::from_param(s), Some(f), "{s}");
    }
    assert_eq!(OutputFormat::from_param("html"), None);
    assert_eq!(
        OutputFormat::from_param("application/x-votable+xml;serialization=BINARY"),
        None
    );
    for f in OutputFormat::all() {
        assert_eq!(OutputFormat::from_param(f.media_type()), Some(*f));
        assert_eq!(OutputFormat::from_param(f.capability_mime()), Some(*f));
        for alias in f.capability_aliases() {
            assert_eq!(OutputFormat::from_param(alias), Some(*f));
        }
        assert!(!f.file_extension().is_empty());
    }
}

#[test]
fn votable_binary2_round_trip() {
    let out = encode(OutputFormat::VotableBinary2, &[batch()], &QueryStatus::Ok);
    let text = String::from_utf8(out.clone()).expect("UTF-8");
    assert!(text.contains("<INFO name=\"QUERY_STATUS\" value=\"OK\"/>"));
    assert!(text.contains("datatype=\"double\" arraysize=\"2\" unit=\"deg\" xtype=\"point\""));
    assert!(text.contains("<DESCRIPTION>an &lt;int&gt; &amp; co</DESCRIPTION>"));
    assert!(text.contains("value=\"SELECT * FROM t WHERE x &lt; 1 AND s = 'a&amp;b'&#10;-- end\""));
    assert!(!text.contains("OVERFLOW"));
    let t = read_votable(&out).expect("readable");
    assert_eq!(t.name.as_deref(), Some("result"));
    check_read_back(&t, false, true);
    let bin = col(&t, "bin");
    let bin0: Vec<Option<i64>> = bin
        .as_list::<i32>()
        .value(0)
        .as_primitive::<Int64Type>()
        .iter()
        .collect();
    assert_eq!(bin0, vec![Some(1), Some(2), Some(255)]);
    assert!(bin.is_null(1));
}

#[test]
fn votable_tabledata_round_trip() {
    let out = encode(OutputFormat::VotableTabledata, &[batch()], &QueryStatus::Ok);
    let text = String::from_utf8(out.clone()).expect("UTF-8");
    assert!(text.contains("<TD>a&lt;b&gt; &amp; \"c\" 'd' é\ttab</TD>"));
    assert!(text.contains("<TD>+Inf</TD>"));
    assert!(text.contains("<TD>0.30000000000000004</TD>"));
    let t = read_votable(&out).expect("readable");
    // An empty string and a null are both an empty TD.
    check_read_back(&t, true, true);
}

#[test]
fn votable_overflow_and_error_trail_the_table() {
    for format in [OutputFormat::VotableBinary2, OutputFormat::VotableTabledata] {
        let out = encode(format, &[batch()], &QueryStatus::Overflow);
        let text = String::from_utf8(out).unwrap();
        let table_end = text.find("</TABLE>").unwrap();
        let overflow = text
            .find("<INFO name=\"QUERY_STATUS\" value=\"OVERFLOW\"/>")
            .unwrap();
        assert!(overflow > table_end);
        assert!(text.find("value=\"OK\"").unwrap() < text.find("<TABLE").unwrap());

        let out = encode(
            format,
            &[batch()],
            &QueryStatus::Error("disk <full>".into()),
        );
        let text = String::from_utf8(out.clone()).unwrap();
        let error = text
            .find("<INFO name=\"QUERY_STATUS\" value=\"ERROR\">disk &lt;full&gt;</INFO>")
            .unwrap();
        assert!(error > text.find("</TABLE>").unwrap());
        assert_eq!(
            read_votable(&out)
                .unwrap()
                .batches
                .iter()
                .map(|b| b.num_rows())
                .sum::<usize>(),
            3
        );
    }
}

#[test]
fn binary2_base64_is_continuous_across_batches() {
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, true)]));
    // 7 rows of 5 bytes (flag + int) per batch: 35 bytes, never a multiple of 3 or 57.
    let batches: Vec<RecordBatch> = (0..3)
        .map(|k| {
            let values: Vec<Option<i32>> = (0..7)
                .map(|i| if i == 3 { None } else { Some(k * 100 + i) })
                .collect();
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(Int32Array::from(values)) as ArrayRef],
            )
            .unwrap()
        })
        .collect();
    let (out, _) = encode_with(
        OutputFormat::VotableBinary2,
        &schema,
        &batches,
        &QueryStatus::Ok,
    )
    .unwrap();
    let text = String::from_utf8(out.clone()).unwrap();
    let start = text.find("<STREAM encoding=\"base64\">\n").unwrap() + 27;
    let end = text.find("</STREAM>").unwrap();
    let lines: Vec<&str> = text[start..end].lines().collect();
    // 105 bytes → 140 characters: one full line and one of 64.
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0].len(), 76);
    assert!(!lines[0].contains('='), "no padding inside the stream");
    let t = read_votable(&out).unwrap();
    let x = col(&t, "x");
    let x = x.as_primitive::<Int32Type>();
    assert_eq!(x.len(), 21);
    assert_eq!(x.value(7), 100);
    assert_eq!(x.value(20), 206);
    assert!(x.is_null(3) && x.is_null(10) && x.is_null(17));
}

#[test]
fn xml_escaping_of_names_and_illegal_characters() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("a\"<b>&c", DataType::Utf8, true),
        Field::new("a\"<b>&c", DataType::Utf8, true),
        Field::new("", DataType::Int32, true),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(StringArray::from(vec![Some("bell\u{7}nul\u{0}]]>\r\n")])) as ArrayRef,
            Arc::new(StringArray::from(vec![Some("\u{FFFF}ok")])),
            Arc::new(Int32Array::from(vec![Some(1)])),
        ],
    )
    .unwrap();
    for format in [OutputFormat::VotableTabledata, OutputFormat::VotableBinary2] {
        let (out, _) = encode_with(
            format,
            &schema,
            std::slice::from_ref(&batch),
            &QueryStatus::Ok,
        )
        .unwrap();
        let t = read_votable(&out).expect("well-formed XML");
        let names: Vec<_> = t.schema.fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, ["a\"<b>&c", "a\"<b>&c_2", "col3"]);
        let s = strings(&col(&t, "a\"<b>&c"));
        if format == OutputFormat::VotableTabledata {
            assert_eq!(s[0].as_deref(), Some("bell\u{FFFD}nul\u{FFFD}]]>\r\n"));
            assert_eq!(
                strings(&col(&t, "a\"<b>&c_2"))[0].as_deref(),
                Some("\u{FFFD}ok")
            );
        } else {
            // BINARY2 carries the bytes untouched, up to the NUL that ends a char string.
            assert_eq!(s[0].as_deref(), Some("bell\u{7}nul"));
        }
    }
}

#[test]
fn error_votable_is_well_formed() {
    let doc = error_votable("bad ADQL: SELECT <nothing> & \u{1}more");
    assert!(doc.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"));
    assert!(doc.contains("<RESOURCE type=\"results\">"));
    let mut reader = quick_xml::Reader::from_str(&doc);
    let mut message = String::new();
    let mut in_info = false;
    loop {
        match reader.read_event().expect("well-formed") {
            quick_xml::events::Event::Start(e) if e.name().as_ref() == b"INFO" => {
                let value = e.try_get_attribute("value").unwrap().unwrap();
                assert_eq!(value.value.as_ref(), b"ERROR");
                in_info = true;
            }
            quick_xml::events::Event::Text(t) if in_info => message.push_str(&t.decode().unwrap()),
            quick_xml::events::Event::GeneralRef(r) if in_info => {
                message.push_str(match r.decode().unwrap().as_ref() {
                    "lt" => "<",
                    "gt" => ">",
                    "amp" => "&",
                    other => panic!("unexpected entity {other}"),
                });
            }
            quick_xml::events::Event::End(e) if e.name().as_ref() == b"INFO" => in_info = false,
            quick_xml::events::Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(message, "bad ADQL: SELECT <nothing> & \u{FFFD}more");
    assert!(error_votable("").contains("unspecified error"));
}

#[test]
fn csv_round_trip_with_arrow_reader() {
    let out = encode(OutputFormat::Csv, &[batch()], &QueryStatus::Ok);
    let text = String::from_utf8(out.clone()).unwrap();
    let mut lines = text.split("\r\n");
    assert!(lines.next().unwrap().starts_with("b,i8,i16,i32,i64,u8"));
    assert!(text.contains("\"a<b> & \"\"c\"\" 'd' é\ttab\""));
    assert!(text.contains(",10.5 -20.25,"));
    // Read every column back as text to compare the exact spellings.
    let reader_schema = Arc::new(Schema::new(
        schema()
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let mut reader = arrow::csv::ReaderBuilder::new(reader_schema)
        .with_header(true)
        .build(std::io::Cursor::new(out))
        .unwrap();
    let b = reader.next().unwrap().unwrap();
    assert_eq!(b.num_rows(), 3);
    let get = |name: &str, row: usize| {
        let c = b.column(b.schema().index_of(name).unwrap());
        c.is_valid(row)
            .then(|| c.as_string::<i32>().value(row).to_owned())
    };
    assert_eq!(get("b", 0).as_deref(), Some("true"));
    assert_eq!(get("b", 1), None);
    assert_eq!(get("i64", 2).as_deref(), Some("9223372036854775807"));
    assert_eq!(get("ra", 0).as_deref(), Some("0.30000000000000004"));
    assert_eq!(get("ra", 2).as_deref(), Some("Infinity"));
    assert_eq!(get("f32", 0).as_deref(), Some("0.1"));
    assert_eq!(get("f32", 2).as_deref(), Some("NaN"));
    assert_eq!(get("s", 0).as_deref(), Some(S0));
    assert_eq!(get("ls", 2).as_deref(), Some("line1\nline2"));
    assert_eq!(get("sv", 2).as_deref(), Some("a,b"));
    assert_eq!(get("ts", 0).as_deref(), Some("2020-09-13T12:26:40.123456"));
    assert_eq!(get("poly", 0).as_deref(), Some("1 2 3 4 5 6"));
    assert_eq!(
        get("li", 2).as_deref(),
        Some("-9223372036854775808 2147483647")
    );
    assert_eq!(get("bin", 0).as_deref(), Some("1 2 255"));
    assert!(matches!(
        encode_with(
            OutputFormat::Csv,
            &schema(),
            &[batch()],
            &QueryStatus::Error("x".into())
        ),
        Err(FormatError::StatusNotRepresentable { .. })
    ));
}

#[test]
fn tsv_escapes_tabs_and_newlines() {
    let out = encode(OutputFormat::Tsv, &[batch()], &QueryStatus::Ok);
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "one header line and one line per row");
    let header: Vec<&str> = lines[0].split('\t').collect();
    assert_eq!(header.len(), schema().fields().len());
    let row0: Vec<&str> = lines[1].split('\t').collect();
    assert_eq!(row0.len(), header.len());
    assert!(lines[1].contains("é\\ttab"));
    assert!(lines[3].contains("line1\\nline2"));
    assert!(lines[2].split('\t').all(str::is_empty), "row of nulls");
}

#[test]
fn json_round_trip() {
    let out = encode(OutputFormat::Json, &[batch()], &QueryStatus::Overflow);
    let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
    let metadata = v["metadata"].as_array().unwrap();
    assert_eq!(metadata.len(), schema().fields().len());
    let ra = metadata.iter().find(|m| m["name"] == "ra").unwrap();
    assert_eq!(ra["datatype"], "double");
    assert_eq!(ra["unit"], "deg");
    assert_eq!(ra["ucd"], "pos.eq.ra;meta.main");
    assert_eq!(ra["description"], "Right ascension (ICRS)");
    let pt = metadata.iter().find(|m| m["name"] == "pt").unwrap();
    assert_eq!(pt["arraysize"], "2");
    assert_eq!(pt["xtype"], "point");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    let idx = |name: &str| schema().index_of(name).unwrap();
    assert_eq!(data[0][idx("b")], true);
    assert_eq!(data[0][idx("ra")], 0.30000000000000004);
    assert_eq!(data[0][idx("f32")], 0.1);
    assert_eq!(data[0][idx("s")], S0);
    assert_eq!(data[0][idx("pt")], serde_json::json!([10.5, -20.25]));
    assert_eq!(data[2][idx("i64")], i64::MAX);
    assert!(data[2][idx("ra")].is_null(), "infinity is null in JSON");
    assert!(
        data[1]
            .as_array()
            .unwrap()
            .iter()
            .all(serde_json::Value::is_null)
    );
    assert_eq!(v["status"], "OVERFLOW");
    let ok = encode(OutputFormat::Json, &[], &QueryStatus::Ok);
    let v: serde_json::Value = serde_json::from_slice(&ok).unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 0);
    assert!(v.get("status").is_none());
}

#[test]
fn parquet_round_trip_keeps_metadata() {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let out = encode(
        OutputFormat::Parquet,
        &[batch(), batch()],
        &QueryStatus::Overflow,
    );
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(out)).unwrap();
    let kv = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .cloned()
        .unwrap_or_default();
    assert!(
        kv.iter()
            .any(|k| k.key == "QUERY_STATUS" && k.value.as_deref() == Some("OVERFLOW"))
    );
    let read_schema = Arc::clone(builder.schema());
    let ra = read_schema.field_with_name("ra").unwrap();
    assert_eq!(ra.metadata().get("ucd").unwrap(), "pos.eq.ra;meta.main");
    let batches: Vec<RecordBatch> = builder.build().unwrap().map(Result::unwrap).collect();
    assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 6);
    let b = &batches[0];
    for (i, field) in schema().fields().iter().enumerate() {
        assert_eq!(
            b.column(i).data_type(),
            field.data_type(),
            "{}",
            field.name()
        );
    }
    let original = batch();
    let i = schema().index_of("poly").unwrap();
    assert_eq!(
        b.column(i).slice(0, 3).as_ref(),
        original.column(i).as_ref()
    );
    let s = b.column(schema().index_of("sv").unwrap());
    assert_eq!(s.as_string_view().value(0), "view");
}

/// Minimal FITS header parse: the cards of the HDU starting at `offset`, and its length.
fn fits_cards(bytes: &[u8], offset: usize) -> (Vec<String>, usize) {
    let mut cards = Vec::new();
    for (i, card) in bytes[offset..].chunks(80).enumerate() {
        let card = String::from_utf8(card.to_vec()).unwrap();
        assert!(card.is_ascii() && card.len() == 80);
        if card.trim_end() == "END" {
            return (cards, ((i + 1) * 80).div_ceil(2880) * 2880);
        }
        cards.push(card);
    }
    panic!("no END card");
}

fn card<'a>(cards: &'a [String], key: &str) -> &'a str {
    cards
        .iter()
        .find(|c| c[..8].trim_end() == key)
        .map(|c| c[10..].split(" / ").next().unwrap().trim())
        .unwrap_or_else(|| panic!("no {key}"))
}

#[test]
fn fits_round_trip() {
    let out = encode(OutputFormat::Fits, &[batch()], &QueryStatus::Overflow);
    assert_eq!(out.len() % 2880, 0);
    let (primary, len) = fits_cards(&out, 0);
    assert_eq!(card(&primary, "SIMPLE"), "T");
    assert_eq!(card(&primary, "NAXIS"), "0");
    let (ext, _) = fits_cards(&out, len);
    assert_eq!(card(&ext, "XTENSION"), "'BINTABLE'");
    assert_eq!(card(&ext, "NAXIS2"), "3");
    assert_eq!(card(&ext, "TFIELDS"), "24");
    let n = |name: &str| schema().index_of(name).unwrap() + 1;
    assert_eq!(card(&ext, &format!("TFORM{}", n("b"))), "'1L      '");
    assert_eq!(card(&ext, &format!("TFORM{}", n("u8"))), "'1B      '");
    assert_eq!(
        card(&ext, &format!("TNULL{}", n("i64"))),
        "-9223372036854775808"
    );
    assert!(card(&ext, &format!("TFORM{}", n("s"))).starts_with(&format!("'{}A", S0.len())));
    assert_eq!(card(&ext, &format!("TFORM{}", n("pt"))), "'2D      '");
    assert_eq!(card(&ext, &format!("TFORM{}", n("poly"))), "'1PD(6)  '");
    assert_eq!(card(&ext, &format!("TUNIT{}", n("ra"))), "'deg     '");
    assert_eq!(
        card(&ext, &format!("TUCD{}", n("ra"))),
        "'pos.eq.ra;meta.main'"
    );
    assert!(ext.iter().any(|c| c.contains("QUERY_STATUS=OVERFLOW")));

    let t = read_fits_table(&out).expect("readable");
    assert_eq!(t.name.as_deref(), Some("result"));
    check_read_back(&t, true, false);
}

#[test]
fn fits_large_result_drains_in_bounded_chunks() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("x", DataType::Float64, true),
        Field::new(
            "v",
            DataType::List(Arc::new(Field::new_list_field(DataType::Float64, true))),
            true,
        ),
    ]));
    let rows = 50_000;
    let mut v = ListBuilder::new(Float64Builder::new());
    for i in 0..rows {
        v.values().append_slice(&[f64::from(i), 1.0]);
        v.append(true);
    }
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Float64Array::from_iter_values((0..rows).map(f64::from))) as ArrayRef,
            Arc::new(v.finish()),
        ],
    )
    .unwrap();
    let batches = [batch.clone(), batch.clone(), batch];
    let (out, chunks) =
        encode_with(OutputFormat::Fits, &schema, &batches, &QueryStatus::Ok).unwrap();
    // 150 000 rows × (8 + 8) bytes + 2.4 MB of heap: several chunks.
    assert!(chunks >= 4, "{chunks} chunks");
    assert_eq!(out.len() % 2880, 0);
    let t = read_fits_table(&out).unwrap();
    let x = col(&t, "x");
    assert_eq!(x.len(), 150_000);
    assert_eq!(x.as_primitive::<Float64Type>().value(149_999), 49_999.0);
    assert_eq!(list_f64(&col(&t, "v"), 50_001), vec![1.0, 1.0]);
}

#[test]
fn fits_rejects_null_sentinel_collisions() {
    let schema = Arc::new(Schema::new(vec![Field::new("u", DataType::UInt8, true)]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![Arc::new(UInt8Array::from(vec![Some(255), None])) as ArrayRef],
    )
    .unwrap();
    let result = encode_with(OutputFormat::Fits, &schema, &[batch], &QueryStatus::Ok);
    assert!(matches!(result, Err(FormatError::Value { .. })));
}

#[test]
fn uint64_beyond_i64_is_an_error_not_a_wrong_value() {
    let schema = Arc::new(Schema::new(vec![Field::new("u", DataType::UInt64, true)]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![Arc::new(UInt64Array::from(vec![u64::MAX])) as ArrayRef],
    )
    .unwrap();
    for format in [
        OutputFormat::VotableBinary2,
        OutputFormat::Csv,
        OutputFormat::Fits,
    ] {
        let result = encode_with(
            format,
            &schema,
            std::slice::from_ref(&batch),
            &QueryStatus::Ok,
        );
        assert!(
            matches!(result, Err(FormatError::Value { .. })),
            "{format:?}"
        );
    }
}

#[test]
fn encoders_reject_misuse() {
    for &format in OutputFormat::all() {
        let mut enc = encoder(format);
        let mut out = Vec::new();
        assert!(enc.batch(&batch(), &mut out).is_err(), "{format:?}");
        enc.begin(&schema(), &info(), &mut out).unwrap();
        assert!(
            enc.begin(&schema(), &info(), &mut out).is_err(),
            "{format:?}"
        );
    }
}

/// Writes every format to `$ASTER_FORMATS_OUT` (default: the temp dir) and, when STILTS is
/// installed, checks the VOTables with `votlint` and the FITS file with `tpipe`.
/// Run with `cargo test -p aster-protocols formats -- --ignored`.
#[test]
#[ignore = "needs STILTS; writes files for external validators"]
fn external_validators() {
    let dir = std::env::var_os("ASTER_FORMATS_OUT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    // STILTS 3.4.7's votlint cannot read variable-length xtype="polygon" arrays in binary
    // serializations (it fails the same way on VOTables STILTS itself writes), so the copy
    // checked here leaves that one xtype out.
    let fields: Vec<Field> = schema()
        .fields()
        .iter()
        .map(|f| {
            let mut f = f.as_ref().clone();
            if f.name() == "poly" {
                f.set_metadata(HashMap::new());
            }
            f
        })
        .collect();
    let checked_schema = Arc::new(Schema::new(fields));
    let checked =
        RecordBatch::try_new(Arc::clone(&checked_schema), batch().columns().to_vec()).unwrap();
    let mut files = Vec::new();
    for &format in OutputFormat::all() {
        let (out, _) = encode_with(
            format,
            &checked_schema,
            &[checked.clone(), checked.clone()],
            &QueryStatus::Overflow,
        )
        .unwrap();
        let path = dir.join(format!(
            "aster-all-types-{format:?}.{}",
            format.file_extension()
        ));
        std::fs::write(&path, out).unwrap();
        files.push((format, path));
    }
    let error_path = dir.join("aster-error.vot");
    std::fs::write(&error_path, error_votable("query failed")).unwrap();
    files.push((OutputFormat::VotableTabledata, error_path));
    let stilts = |args: &[&str]| {
        std::process::Command::new("stilts")
            .args(args)
            .output()
            .ok()
    };
    for (format, path) in &files {
        let path = path.to_str().unwrap();
        match format {
            OutputFormat::VotableBinary2 | OutputFormat::VotableTabledata => {
                let Some(out) = stilts(&["votlint", "validate=true", &format!("votable={path}")])
                else {
                    return;
                };
                let report = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                println!("votlint {path}:\n{report}");
                assert!(!report.contains("ERROR"), "{report}");
            }
            OutputFormat::Fits => {
                let Some(out) =
                    stilts(&["tpipe", &format!("in={path}"), "ifmt=fits", "omode=count"])
                else {
                    return;
                };
                let report = String::from_utf8_lossy(&out.stdout);
                println!("tpipe {path}: {report}");
                assert!(report.contains("rows: 6"), "{report}");
            }
            _ => {}
        }
    }
}

#[test]
fn dictionaries_and_other_types_are_written_as_text() {
    use arrow::array::{DictionaryArray, Time64MicrosecondArray};
    use arrow::datatypes::Int32Type as Key;
    let dict: DictionaryArray<Key> = vec![Some("g"), None, Some("r")].into_iter().collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("band", dict.data_type().clone(), true),
        Field::new(
            "t",
            DataType::Time64(arrow::datatypes::TimeUnit::Microsecond),
            true,
        ),
        Field::new("emoji", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(dict) as ArrayRef,
            Arc::new(Time64MicrosecondArray::from(vec![
                Some(3_600_000_000),
                None,
                Some(0),
            ])),
            Arc::new(StringArray::from(vec![Some("🔭 ok"), None, Some("")])),
        ],
    )
    .unwrap();
    for format in [OutputFormat::VotableBinary2, OutputFormat::VotableTabledata] {
        let (out, _) = encode_with(
            format,
            &schema,
            std::slice::from_ref(&batch),
            &QueryStatus::Ok,
        )
        .unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.contains("<FIELD name=\"emoji\" datatype=\"unicodeChar\" arraysize=\"*\"/>"));
        let t = read_votable(&out).unwrap();
        assert_eq!(
            strings(&col(&t, "band")),
            [Some("g".to_owned()), None, Some("r".to_owned())]
        );
        assert_eq!(strings(&col(&t, "t"))[0].as_deref(), Some("01:00:00"));
        assert_eq!(strings(&col(&t, "emoji"))[0].as_deref(), Some("🔭 ok"));
    }
    let (csv, _) = encode_with(
        OutputFormat::Csv,
        &schema,
        std::slice::from_ref(&batch),
        &QueryStatus::Ok,
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(csv).unwrap(),
        "band,t,emoji\r\ng,01:00:00,🔭 ok\r\n,,\r\nr,00:00:00,\r\n"
    );
}

#[test]
fn results_declare_the_types_tap_schema_declares() {
    let item = |t: DataType| Arc::new(Field::new("item", t, true));
    let fields = vec![
        Field::new("b", DataType::Boolean, true),
        Field::new("i8", DataType::Int8, true),
        Field::new("u8", DataType::UInt8, true),
        Field::new("u16", DataType::UInt16, true),
        Field::new("i64", DataType::Int64, true),
        Field::new("u64", DataType::UInt64, true),
        Field::new("f32", DataType::Float32, true),
        Field::new("dec", DataType::Decimal128(10, 2), true),
        Field::new("s", DataType::Utf8, true),
        Field::new(
            "t",
            DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None),
            true,
        ),
        Field::new("d", DataType::Date32, true),
        Field::new("bin", DataType::Binary, true),
        Field::new("nul", DataType::Null, true),
        Field::new("fl", DataType::List(item(DataType::Float32)), true),
        Field::new("il", DataType::List(item(DataType::Int32)), true),
        Field::new("sl", DataType::List(item(DataType::Utf8)), true),
        Field::new(
            "fixed",
            DataType::FixedSizeList(item(DataType::Float64), 4),
            true,
        ),
        with_meta(
            Field::new("pos", DataType::List(item(DataType::Float64)), true),
            &[("xtype", "point")],
        ),
        with_meta(
            Field::new("circ", DataType::List(item(DataType::Float64)), true),
            &[("xtype", "circle")],
        ),
    ];
    let mut fields = fields;
    fields.push(with_meta(
        Field::new("ascii", DataType::Utf8, true),
        &[("datatype", "char")],
    ));
    let schema = Schema::new(fields);
    for (spec, field) in columns::column_specs(&schema).iter().zip(schema.fields()) {
        let xtype = field.metadata().get("xtype").map(String::as_str);
        let declared = field.metadata().get("datatype").map(String::as_str);
        let (datatype, arraysize) =
            aster_archive::tap_schema::votable_type(field.data_type(), xtype, declared);
        assert_eq!(
            (spec.votable_datatype(), spec.votable_arraysize()),
            (datatype, arraysize),
            "{}",
            field.name()
        );
    }
}

#[test]
fn char_columns_come_back_as_char() {
    // A VOTable char column read in (as an upload would be) and written out again.
    let doc = br#"<?xml version="1.0"?><VOTABLE version="1.4"><RESOURCE><TABLE>
<FIELD name="c" datatype="char" arraysize="*"/><FIELD name="u" datatype="unicodeChar" arraysize="*"/>
<DATA><TABLEDATA><TR><TD>abc</TD><TD>&#233;t&#233;</TD></TR></TABLEDATA></DATA></TABLE></RESOURCE></VOTABLE>"#;
    let t = read_votable(doc).unwrap();
    assert_eq!(meta(&t, "c", "datatype"), Some("char"));
    assert_eq!(meta(&t, "u", "datatype"), None);
    // A non-ASCII value cannot be char: it is written as '?'.
    let c = StringArray::from(vec![Some("abc"), Some("na\u{EF}ve")]);
    let u = StringArray::from(vec![Some("\u{E9}t\u{E9}"), None]);
    let batch = RecordBatch::try_new(t.schema.clone(), vec![Arc::new(c), Arc::new(u)]).unwrap();
    for format in [OutputFormat::VotableTabledata, OutputFormat::VotableBinary2] {
        let (out, _) = encode_with(
            format,
            &t.schema,
            std::slice::from_ref(&batch),
            &QueryStatus::Ok,
        )
        .unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.contains("<FIELD name=\"c\" datatype=\"char\" arraysize=\"*\""),
            "{text}"
        );
        assert!(
            text.contains("<FIELD name=\"u\" datatype=\"unicodeChar\""),
            "{text}"
        );
        let back = read_votable(&out).unwrap();
        assert_eq!(
            strings(&col(&back, "c")),
            vec![Some("abc".into()), Some("na?ve".into())]
        );
        assert_eq!(
            strings(&col(&back, "u"))[0].as_deref(),
            Some("\u{E9}t\u{E9}")
        );
    }
}
