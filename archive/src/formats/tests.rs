//! Tests of the table readers: every format with every type and nulls, and malformed or
//! hostile files that must give errors, never panics.

use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray, Int32Array, ListArray, RecordBatch, StringArray};
use arrow::datatypes::{
    DataType, Field, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, Schema,
    UInt8Type, UInt16Type, UInt64Type,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;

use super::*;

fn column(table: &ImportedTable, name: &str) -> Arc<dyn Array> {
    let i = table.schema.index_of(name).expect("column exists");
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

fn rows(table: &ImportedTable) -> usize {
    table.batches.iter().map(RecordBatch::num_rows).sum()
}

fn list_f64(array: &dyn Array, row: usize) -> Vec<f64> {
    let list = array.as_any().downcast_ref::<ListArray>().expect("list");
    list.value(row)
        .as_primitive::<Float64Type>()
        .iter()
        .map(|v| v.unwrap_or(f64::NAN))
        .collect()
}

fn list_i64(array: &dyn Array, row: usize) -> Vec<Option<i64>> {
    let list = array.as_any().downcast_ref::<ListArray>().expect("list");
    list.value(row).as_primitive::<Int64Type>().iter().collect()
}

const TABLEDATA: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">
<RESOURCE type="results">
<INFO name="QUERY_STATUS" value="OK"/>
<TABLE name="stars">
<DESCRIPTION>A table</DESCRIPTION>
<FIELD name="id" datatype="long" ucd="meta.id;meta.main"><VALUES null="-1"/></FIELD>
<FIELD name="ra" datatype="double" unit="deg" ucd="pos.eq.ra" utype="x:ra">
  <DESCRIPTION>Right &amp; ascension</DESCRIPTION>
</FIELD>
<FIELD name="mag" datatype="float"/>
<FIELD name="flag" datatype="boolean"/>
<FIELD name="n" datatype="short"/>
<FIELD name="b" datatype="unsignedByte"/>
<FIELD name="i" datatype="int"><VALUES null="0x7fffffff"><MIN value="0"/></VALUES></FIELD>
<FIELD name="name" datatype="char" arraysize="*"/>
<FIELD name="uname" datatype="unicodeChar" arraysize="*"/>
<FIELD name="pos" datatype="double" arraysize="2" xtype="point"/>
<FIELD name="counts" datatype="int" arraysize="*"><VALUES null="-9"/></FIELD>
<FIELD name="when" datatype="char" arraysize="*" xtype="timestamp"/>
<DATA><TABLEDATA>
<TR><TD>1</TD><TD>10.5</TD><TD>1.25</TD><TD>T</TD><TD>-3</TD><TD>255</TD><TD>7</TD><TD>a &lt;b&gt; &amp; "c" &#233;</TD><TD>ü</TD><TD>1.5 -2.5</TD><TD>1 -9 3</TD><TD>2020-01-02T03:04:05</TD></TR>
<TR><TD>-1</TD><TD/><TD>NaN</TD><TD>?</TD><TD></TD><TD/><TD>2147483647</TD><TD/><TD/><TD/><TD/><TD/></TR>
<TR><TD>0x10</TD><TD>+Inf</TD><TD>-1e-3</TD><TD>false</TD><TD>7</TD><TD>0</TD><TD>-5</TD><TD><![CDATA[x<y]]></TD><TD>z</TD><TD> 0 0 </TD><TD></TD></TR>
</TABLEDATA></DATA>
</TABLE>
<TABLE name="second"><FIELD name="z" datatype="int"/></TABLE>
</RESOURCE>
</VOTABLE>
"#;

#[test]
fn votable_tabledata_types_nulls_and_metadata() {
    let t = read_votable(TABLEDATA.as_bytes()).expect("valid VOTable");
    assert_eq!(t.name.as_deref(), Some("stars"));
    assert_eq!(rows(&t), 3);
    let ty = |n: &str| t.schema.field_with_name(n).unwrap().data_type().clone();
    assert_eq!(ty("id"), DataType::Int64);
    assert_eq!(ty("ra"), DataType::Float64);
    assert_eq!(ty("mag"), DataType::Float32);
    assert_eq!(ty("flag"), DataType::Boolean);
    assert_eq!(ty("n"), DataType::Int16);
    assert_eq!(ty("b"), DataType::UInt8);
    assert_eq!(ty("i"), DataType::Int32);
    assert_eq!(ty("name"), DataType::Utf8);
    assert!(matches!(ty("pos"), DataType::List(_)));
    assert_eq!(meta(&t, "ra", "unit"), Some("deg"));
    assert_eq!(meta(&t, "ra", "ucd"), Some("pos.eq.ra"));
    assert_eq!(meta(&t, "ra", "utype"), Some("x:ra"));
    assert_eq!(meta(&t, "ra", "description"), Some("Right & ascension"));
    assert_eq!(meta(&t, "pos", "xtype"), Some("point"));
    assert_eq!(meta(&t, "when", "xtype"), Some("timestamp"));

    let id = column(&t, "id");
    let id = id.as_primitive::<Int64Type>();
    assert_eq!(id.value(0), 1);
    assert!(id.is_null(1), "VALUES null=-1");
    assert_eq!(id.value(2), 16, "hex integers");
    let ra = column(&t, "ra");
    let ra = ra.as_primitive::<Float64Type>();
    assert_eq!(ra.value(0), 10.5);
    assert!(ra.is_null(1));
    assert_eq!(ra.value(2), f64::INFINITY);
    let mag = column(&t, "mag");
    assert!(mag.is_null(1), "NaN float scalar is null");
    assert_eq!(mag.as_primitive::<Float32Type>().value(2), -1e-3);
    let flag = column(&t, "flag");
    let flag = flag.as_boolean();
    assert!(flag.value(0) && flag.is_null(1) && !flag.value(2));
    assert!(column(&t, "n").is_null(1));
    assert_eq!(column(&t, "b").as_primitive::<UInt8Type>().value(0), 255);
    let i = column(&t, "i");
    assert!(i.is_null(1), "hex VALUES null");
    assert_eq!(i.as_primitive::<Int32Type>().value(2), -5);
    let name = column(&t, "name");
    let name = name.as_string::<i32>();
    assert_eq!(name.value(0), "a <b> & \"c\" é");
    assert!(name.is_null(1));
    assert_eq!(name.value(2), "x<y");
    assert_eq!(column(&t, "uname").as_string::<i32>().value(0), "ü");
    let pos = column(&t, "pos");
    assert_eq!(list_f64(&pos, 0), vec![1.5, -2.5]);
    assert!(pos.is_null(1));
    let counts = column(&t, "counts");
    assert_eq!(list_i64(&counts, 0), vec![Some(1), None, Some(3)]);
    assert!(counts.is_null(2));
    assert!(column(&t, "when").is_null(2), "missing trailing TD is null");
}

fn binary2_doc(stream: &str, extra_fields: &str) -> String {
    format!(
        r#"<VOTABLE version="1.4"><RESOURCE><TABLE>
<FIELD name="a" datatype="int"/>
<FIELD name="s" datatype="char" arraysize="*"/>
<FIELD name="v" datatype="double" arraysize="*"/>
<FIELD name="f" datatype="float"/>{extra_fields}
<DATA><BINARY2><STREAM encoding="base64">{stream}</STREAM></BINARY2></DATA>
</TABLE></RESOURCE></VOTABLE>"#
    )
}

fn binary2_rows() -> Vec<u8> {
    let mut b = Vec::new();
    // Row 1: no nulls.
    b.push(0x00);
    b.extend_from_slice(&42i32.to_be_bytes());
    b.extend_from_slice(&3u32.to_be_bytes());
    b.extend_from_slice(b"abc");
    b.extend_from_slice(&2u32.to_be_bytes());
    b.extend_from_slice(&1.5f64.to_be_bytes());
    b.extend_from_slice(&(-2.0f64).to_be_bytes());
    b.extend_from_slice(&0.5f32.to_be_bytes());
    // Row 2: a and s null (flags 1100 0000); data still present.
    b.push(0xC0);
    b.extend_from_slice(&0i32.to_be_bytes());
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&f32::NAN.to_be_bytes());
    b
}

#[test]
fn votable_binary2_with_null_flags() {
    let encoded = STANDARD.encode(binary2_rows());
    // Line breaks inside the stream are whitespace to skip.
    let wrapped: String = encoded
        .as_bytes()
        .chunks(10)
        .map(|c| format!("{}\n", String::from_utf8_lossy(c)))
        .collect();
    let t = read_votable(binary2_doc(&wrapped, "").as_bytes()).expect("valid");
    assert_eq!(rows(&t), 2);
    let a = column(&t, "a");
    assert_eq!(a.as_primitive::<Int32Type>().value(0), 42);
    assert!(a.is_null(1));
    let s = column(&t, "s");
    assert_eq!(s.as_string::<i32>().value(0), "abc");
    assert!(s.is_null(1));
    let v = column(&t, "v");
    assert_eq!(list_f64(&v, 0), vec![1.5, -2.0]);
    assert_eq!(list_f64(&v, 1), Vec::<f64>::new());
    let f = column(&t, "f");
    assert_eq!(f.as_primitive::<Float32Type>().value(0), 0.5);
    assert!(f.is_null(1));
}

#[test]
fn votable_binary_uses_values_null() {
    let mut b = Vec::new();
    for v in [5i16, -99, 7] {
        b.extend_from_slice(&v.to_be_bytes());
        b.extend_from_slice(b"T");
    }
    let doc = format!(
        r#"<VOTABLE><RESOURCE><TABLE>
<FIELD name="x" datatype="short"><VALUES null="-99"/></FIELD>
<FIELD name="c" datatype="char" arraysize="1"/>
<DATA><BINARY><STREAM encoding="base64">{}</STREAM></BINARY></DATA></TABLE></RESOURCE></VOTABLE>"#,
        STANDARD.encode(&b)
    );
    let t = read_votable(doc.as_bytes()).expect("valid");
    let x = column(&t, "x");
    let x = x.as_primitive::<Int16Type>();
    assert_eq!((x.value(0), x.is_null(1), x.value(2)), (5, true, 7));
    assert_eq!(column(&t, "c").as_string::<i32>().value(2), "T");
}

#[test]
fn votable_without_data_is_empty_and_names_are_unique() {
    let doc = r#"<VOTABLE><RESOURCE><RESOURCE><TABLE>
<FIELD name="ra" datatype="double"/><FIELD name="RA" datatype="double"/><FIELD name="" datatype="int"/>
</TABLE></RESOURCE></RESOURCE></VOTABLE>"#;
    let t = read_votable(doc.as_bytes()).expect("valid");
    assert_eq!(rows(&t), 0);
    let names: Vec<_> = t.schema.fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, ["ra", "RA_2", "col3"]);
}

fn votable_error(doc: &str) -> String {
    match read_votable(doc.as_bytes()) {
        Ok(_) => panic!("expected an error for {doc}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn votable_malformed_inputs_give_errors() {
    let bad_b64 = votable_error(&binary2_doc("AAAA$$$$", ""));
    assert!(bad_b64.contains("base64"), "{bad_b64}");

    let truncated = STANDARD.encode(&binary2_rows()[..20]);
    let e = votable_error(&binary2_doc(&truncated, ""));
    assert!(e.contains("truncated"), "{e}");

    let wrong_arraysize = r#"<VOTABLE><RESOURCE><TABLE><FIELD name="p" datatype="double" arraysize="2"/>
<DATA><TABLEDATA><TR><TD>1 2 3</TD></TR></TABLEDATA></DATA></TABLE></RESOURCE></VOTABLE>"#;
    let e = votable_error(wrong_arraysize);
    assert!(e.contains("arraysize") && e.contains("row 1"), "{e}");

    let bad_number = r#"<VOTABLE><RESOURCE><TABLE><FIELD name="p" datatype="int"/>
<DATA><TABLEDATA><TR><TD>12x</TD></TR></TABLEDATA></DATA></TABLE></RESOURCE></VOTABLE>"#;
    assert!(votable_error(bad_number).contains("invalid integer"));

    let out_of_range = r#"<VOTABLE><RESOURCE><TABLE><FIELD name="p" datatype="short"/>
<DATA><TABLEDATA><TR><TD>40000</TD></TR></TABLEDATA></DATA></TABLE></RESOURCE></VOTABLE>"#;
    assert!(votable_error(out_of_range).contains("out of range"));

    let too_many_cells = r#"<VOTABLE><RESOURCE><TABLE><FIELD name="p" datatype="int"/>
<DATA><TABLEDATA><TR><TD>1</TD><TD>2</TD></TR></TABLEDATA></DATA></TABLE></RESOURCE></VOTABLE>"#;
    assert!(votable_error(too_many_cells).contains("more TD cells"));

    assert!(votable_error("<VOTABLE><RESOURCE/></VOTABLE>").contains("no TABLE"));
    assert!(votable_error("not xml at all").contains("no TABLE"));
    assert!(votable_error("<VOTABLE><RESOURCE><TABLE></RESOURCE>").contains("XML error"));
    let unknown_type = r#"<VOTABLE><TABLE><FIELD name="p" datatype="quad"/></TABLE></VOTABLE>"#;
    assert!(votable_error(unknown_type).contains("unknown datatype"));
    let bad_size =
        r#"<VOTABLE><TABLE><FIELD name="p" datatype="int" arraysize="*x2"/></TABLE></VOTABLE>"#;
    assert!(votable_error(bad_size).contains("arraysize"));
    let entity = r#"<VOTABLE><TABLE><FIELD name="p" datatype="char" arraysize="*"/>
<DATA><TABLEDATA><TR><TD>&foo;</TD></TR></TABLEDATA></DATA></TABLE></VOTABLE>"#;
    assert!(votable_error(entity).contains("entity"));
    let external = r#"<VOTABLE><TABLE><FIELD name="p" datatype="int"/>
<DATA><BINARY2><STREAM href="http://example.org/x"/></BINARY2></DATA></TABLE></VOTABLE>"#;
    assert!(votable_error(external).contains("href"));
    let deep = "<a>".repeat(10_000);
    assert!(votable_error(&deep).contains("nested too deeply"));
    // A huge declared array in a tiny stream must fail on length, not allocate.
    let huge = format!(
        r#"<VOTABLE><TABLE><FIELD name="p" datatype="double" arraysize="*"/>
<DATA><BINARY2><STREAM encoding="base64">{}</STREAM></BINARY2></DATA></TABLE></VOTABLE>"#,
        STANDARD.encode([0u8, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0])
    );
    assert!(votable_error(&huge).contains("truncated"));
    let zero_width = format!(
        r#"<VOTABLE><TABLE><FIELD name="p" datatype="int" arraysize="0"/>
<DATA><BINARY><STREAM encoding="base64">{}</STREAM></BINARY></DATA></TABLE></VOTABLE>"#,
        STANDARD.encode([1u8])
    );
    assert!(votable_error(&zero_width).contains("zero bytes"));
}

/// Builds a FITS file: primary HDU, then a BINTABLE with the given cards, rows and heap.
fn fits_file(cards: &[String], main: &[u8], heap: &[u8]) -> Vec<u8> {
    fn header(cards: &[String]) -> Vec<u8> {
        let mut h = Vec::new();
        for c in cards.iter().map(String::as_str).chain(["END"]) {
            let mut card = c.as_bytes().to_vec();
            card.resize(80, b' ');
            h.extend_from_slice(&card);
        }
        h.resize(h.len().div_ceil(2880) * 2880, b' ');
        h
    }
    let primary = [
        "SIMPLE  =                    T",
        "BITPIX  =                    8",
        "NAXIS   =                    0",
        "EXTEND  =                    T",
    ]
    .map(String::from);
    let mut file = header(&primary);
    file.extend(header(cards));
    file.extend_from_slice(main);
    file.extend_from_slice(heap);
    file.resize(file.len().div_ceil(2880) * 2880, 0);
    file
}

fn kw(key: &str, value: &str) -> String {
    format!("{key:<8}= {value:>20}")
}

fn kws(key: &str, value: &str) -> String {
    let value = value.replace('\'', "''");
    format!("{key:<8}= '{value:<8}'")
}

fn bintable_cards(
    naxis1: usize,
    naxis2: usize,
    pcount: usize,
    cols: &[(&str, &str)],
) -> Vec<String> {
    let mut cards = vec![
        kws("XTENSION", "BINTABLE"),
        kw("BITPIX", "8"),
        kw("NAXIS", "2"),
        kw("NAXIS1", &naxis1.to_string()),
        kw("NAXIS2", &naxis2.to_string()),
        kw("PCOUNT", &pcount.to_string()),
        kw("GCOUNT", "1"),
        kw("TFIELDS", &cols.len().to_string()),
    ];
    for (i, (name, form)) in cols.iter().enumerate() {
        cards.push(kws(&format!("TTYPE{}", i + 1), name));
        cards.push(kws(&format!("TFORM{}", i + 1), form));
    }
    cards
}

#[test]
fn fits_bintable_types_scaling_nulls_and_heap() {
    let cols = [
        ("flag", "1L"),
        ("b", "1B"),
        ("u16", "1I"),
        ("j", "1J"),
        ("k", "1K"),
        ("e", "1E"),
        ("d", "1D"),
        ("name", "6A"),
        ("bits", "3X"),
        ("pos", "2D"),
        ("var", "1PJ(3)"),
        ("sb", "1B"),
        ("u64", "1K"),
    ];
    // 1+1+2+4+8+4+8+6+1+16+8+1+8 = 68 bytes per row.
    let mut cards = bintable_cards(68, 2, 12, &cols);
    cards.push(kw("TZERO3", "32768"));
    cards.push(kw("TNULL4", "-1"));
    cards.push(kws("TUNIT6", "mag"));
    cards.push(kws("TUCD6", "phot.mag"));
    cards.push(kws("TCOMM6", "It's a magnitude"));
    cards.push(kw("TZERO12", "-128"));
    cards.push(kw("TZERO13", "9223372036854775808"));
    cards.push(kws("EXTNAME", "cat"));
    let mut main = Vec::new();
    let mut heap = Vec::new();
    for r in 0..2u8 {
        main.push(if r == 0 { b'T' } else { 0 });
        main.push(200 + r);
        main.extend_from_slice(&(i16::MAX).to_be_bytes()); // 65535 after TZERO
        main.extend_from_slice(&(if r == 0 { 7i32 } else { -1 }).to_be_bytes());
        main.extend_from_slice(&(-5i64).to_be_bytes());
        main.extend_from_slice(&(if r == 0 { 1.5f32 } else { f32::NAN }).to_be_bytes());
        main.extend_from_slice(&2.25f64.to_be_bytes());
        main.extend_from_slice(if r == 0 { b"ab\0xyz" } else { b"      " });
        main.push(0b1010_0000);
        main.extend_from_slice(&1.0f64.to_be_bytes());
        main.extend_from_slice(&(-1.0f64).to_be_bytes());
        let count: i32 = if r == 0 { 3 } else { 0 };
        main.extend_from_slice(&count.to_be_bytes());
        main.extend_from_slice(&(heap.len() as i32).to_be_bytes());
        for v in 0..count {
            heap.extend_from_slice(&(v * 10).to_be_bytes());
        }
        main.push(0); // -128
        main.extend_from_slice(&i64::MAX.to_be_bytes()); // u64::MAX
    }
    let file = fits_file(&cards, &main, &heap);
    let t = read_fits_table(&file).expect("valid FITS");
    assert_eq!(t.name.as_deref(), Some("cat"));
    assert_eq!(rows(&t), 2);
    assert!(
        t.schema.field_with_name("bits").is_err(),
        "X columns are skipped"
    );
    let flag = column(&t, "flag");
    assert!(flag.as_boolean().value(0) && flag.is_null(1));
    assert_eq!(column(&t, "b").as_primitive::<UInt8Type>().value(1), 201);
    assert_eq!(
        column(&t, "u16").as_primitive::<UInt16Type>().value(0),
        u16::MAX
    );
    let j = column(&t, "j");
    assert_eq!(j.as_primitive::<Int32Type>().value(0), 7);
    assert!(j.is_null(1), "TNULL");
    assert_eq!(column(&t, "k").as_primitive::<Int64Type>().value(0), -5);
    let e = column(&t, "e");
    assert_eq!(e.as_primitive::<Float32Type>().value(0), 1.5);
    assert!(e.is_null(1), "NaN is null");
    assert_eq!(meta(&t, "e", "unit"), Some("mag"));
    assert_eq!(meta(&t, "e", "ucd"), Some("phot.mag"));
    assert_eq!(meta(&t, "e", "description"), Some("It's a magnitude"));
    let name = column(&t, "name");
    assert_eq!(name.as_string::<i32>().value(0), "ab");
    assert!(name.is_null(1), "blank string is null");
    assert_eq!(list_f64(&column(&t, "pos"), 1), vec![1.0, -1.0]);
    let var = column(&t, "var");
    assert_eq!(list_i64(&var, 0), vec![Some(0), Some(10), Some(20)]);
    assert!(list_i64(&var, 1).is_empty());
    assert_eq!(column(&t, "sb").as_primitive::<Int8Type>().value(0), -128);
    assert_eq!(
        column(&t, "u64").as_primitive::<UInt64Type>().value(0),
        u64::MAX
    );
}

fn fits_error(file: &[u8]) -> String {
    match read_fits_table(file) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn fits_malformed_inputs_give_errors() {
    let cols = [("x", "1D")];
    let good = fits_file(&bintable_cards(8, 2, 0, &cols), &[0; 16], &[]);
    assert!(read_fits_table(&good).is_ok());

    // Truncated data: the header claims far more rows than the file holds.
    let huge = fits_file(&bintable_cards(8, 1 << 40, 0, &cols), &[0; 16], &[]);
    assert!(fits_error(&huge).contains("truncated"));
    let overflow = fits_file(&bintable_cards(1 << 40, 1 << 40, 0, &cols), &[], &[]);
    assert!(fits_error(&overflow).contains("overflow"));
    // Cut inside the header.
    assert!(fits_error(&good[..2880 + 400]).contains("END"));
    // Cut inside the data block.
    assert!(fits_error(&good[..2 * 2880 + 4]).contains("truncated"));
    // Column wider than the row.
    let wide = fits_file(&bintable_cards(8, 1, 0, &[("x", "2D")]), &[0; 16], &[]);
    assert!(fits_error(&wide).contains("wider than NAXIS1"));
    // Heap descriptor outside the heap.
    let mut row = Vec::new();
    row.extend_from_slice(&1000i32.to_be_bytes());
    row.extend_from_slice(&0i32.to_be_bytes());
    let bad_heap = fits_file(&bintable_cards(8, 1, 4, &[("v", "1PD")]), &row, &[0; 4]);
    assert!(fits_error(&bad_heap).contains("outside the heap"));
    let bad_form = fits_file(&bintable_cards(8, 1, 0, &[("v", "1Z")]), &[0; 8], &[]);
    assert!(fits_error(&bad_form).contains("TFORM"));
    let image_only = &good[..2880];
    assert!(fits_error(image_only).contains("no BINTABLE"));
    assert!(fits_error(b"SIMPLE  = garbage").contains("END"));
    assert!(fits_error(b"hello").contains("not a FITS"));
    let zero_width = fits_file(&bintable_cards(0, 1 << 50, 0, &[]), &[], &[]);
    assert!(fits_error(&zero_width).contains("zero bytes"));
}

#[test]
fn csv_infers_types() {
    let csv = "\u{feff}id,ra,name,flag,id\n1,10.5,a,true,9\n2,,\"b,c\",false,8\n";
    let t = read_csv(csv.as_bytes()).expect("valid CSV");
    assert_eq!(rows(&t), 2);
    let names: Vec<_> = t.schema.fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, ["id", "ra", "name", "flag", "id_2"]);
    assert_eq!(column(&t, "id").data_type(), &DataType::Int64);
    let ra = column(&t, "ra");
    assert_eq!(ra.as_primitive::<Float64Type>().value(0), 10.5);
    assert!(ra.is_null(1));
    assert_eq!(column(&t, "name").as_string::<i32>().value(1), "b,c");
    assert_eq!(column(&t, "flag").data_type(), &DataType::Boolean);
    assert!(read_csv(b"").is_err());
    assert!(read_csv(b"a,b\n1,2,3\n").is_err(), "ragged rows");
}

#[test]
fn parquet_round_trip_and_garbage() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("x", DataType::Int32, true),
        Field::new("s", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int32Array::from(vec![Some(1), None])),
            Arc::new(StringArray::from(vec![Some("a"), Some("b")])),
        ],
    )
    .unwrap();
    let mut buf = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let t = read_parquet(Bytes::from(buf.clone())).expect("valid parquet");
    assert_eq!(rows(&t), 2);
    assert!(column(&t, "x").is_null(1));
    let mut corrupt = buf.clone();
    let mid = corrupt.len() / 2;
    corrupt.truncate(mid);
    assert!(read_parquet(Bytes::from(corrupt)).is_err());
    assert!(read_parquet(Bytes::from_static(b"PAR1garbagePAR1")).is_err());

    let via_any = read_any("upload.bin", Bytes::from(buf)).expect("magic");
    assert_eq!(rows(&via_any), 2);
}

#[test]
fn read_any_dispatches_by_magic_and_extension() {
    let vot = read_any("x.dat", Bytes::from(TABLEDATA)).expect("votable by magic");
    assert_eq!(rows(&vot), 3);
    let fits = fits_file(&bintable_cards(8, 1, 0, &[("x", "1D")]), &[0; 8], &[]);
    assert_eq!(rows(&read_any("x", Bytes::from(fits)).expect("fits")), 1);
    let csv = read_any("t.csv", Bytes::from_static(b"a,b\n1,2\n")).expect("csv");
    assert_eq!(csv.schema.fields().len(), 2);
    let tsv = read_any("t.tsv", Bytes::from_static(b"a\tb\n1\t2\n")).expect("tsv");
    assert_eq!(tsv.schema.fields().len(), 2);
    assert!(read_any("t.gz", Bytes::from_static(&[0x1f, 0x8b, 8, 0])).is_err());
    assert!(read_any("t.xlsx", Bytes::from_static(b"PK\x03\x04")).is_err());
}

#[test]
fn builders_reject_mismatched_values() {
    let doc = r#"<VOTABLE><TABLE><FIELD name="b" datatype="boolean"/>
<DATA><TABLEDATA><TR><TD>maybe</TD></TR></TABLEDATA></DATA></TABLE></VOTABLE>"#;
    assert!(votable_error(doc).contains("invalid boolean"));
    let ok = r#"<VOTABLE><TABLE><FIELD name="b" datatype="bit" arraysize="*"/>
<DATA><TABLEDATA><TR><TD>0110</TD></TR></TABLEDATA></DATA></TABLE></VOTABLE>"#;
    let t = read_votable(ok.as_bytes()).expect("bits");
    let bits = column(&t, "b");
    let list = bits.as_any().downcast_ref::<ListArray>().unwrap();
    let values = list.value(0);
    let values = values.as_any().downcast_ref::<BooleanArray>().unwrap();
    assert_eq!(
        values.iter().flatten().collect::<Vec<_>>(),
        [false, true, true, false]
    );
}

/// Deterministic mutation fuzzing: corrupted and truncated files must give `Ok` or `Err`,
/// never a panic.
#[test]
fn mutated_files_never_panic() {
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let fits = {
        let mut row = Vec::new();
        row.extend_from_slice(&2i32.to_be_bytes());
        row.extend_from_slice(&0i32.to_be_bytes());
        row.extend_from_slice(b"abcd");
        let mut heap = Vec::new();
        heap.extend_from_slice(&1.0f64.to_be_bytes());
        heap.extend_from_slice(&2.0f64.to_be_bytes());
        fits_file(
            &bintable_cards(12, 1, 16, &[("v", "1PD(2)"), ("s", "4A")]),
            &row,
            &heap,
        )
    };
    let binary2 = binary2_doc(&STANDARD.encode(binary2_rows()), "").into_bytes();
    let samples: [(&str, Vec<u8>); 4] = [
        ("t.vot", TABLEDATA.as_bytes().to_vec()),
        ("b.vot", binary2),
        ("t.fits", fits),
        ("t.csv", b"a,b,c\n1,2.5,x\n3,,\"y\"\n".to_vec()),
    ];
    for (name, original) in &samples {
        for _ in 0..1500 {
            let mut bytes = original.clone();
            for _ in 0..(next() % 4 + 1) {
                let i = (next() % bytes.len() as u64) as usize;
                bytes[i] = match next() % 3 {
                    0 => next() as u8,
                    1 => b"0123456789*x<>/ '\"=&"[(next() % 20) as usize],
                    _ => bytes[i] ^ 0x80,
                };
            }
            if next() % 4 == 0 {
                let cut = (next() % bytes.len() as u64) as usize;
                bytes.truncate(cut);
            }
            let _ = read_any(name, Bytes::from(bytes));
        }
    }
}
