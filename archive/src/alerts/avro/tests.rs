use std::sync::Arc;

use arrow::array::{
    Array, BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray,
};
use arrow::datatypes::{DataType, Field, Schema};
use serde_json::{Value, json};

use super::*;
use crate::alerts::packet::{AlertParts, AlertSchema, AlertTable, confluent_frame};
use crate::alerts::store::{AlertArchive, AlertQuery, NewAlert};

/// A reader of the binary encoding, the test's own, to check what the writer wrote.
fn read_long(b: &[u8], at: &mut usize) -> i64 {
    let (mut z, mut shift) = (0u64, 0);
    loop {
        let byte = b[*at];
        *at += 1;
        z |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

fn decode(ty: &AvroType, b: &[u8], at: &mut usize) -> Value {
    match ty {
        AvroType::Null => Value::Null,
        AvroType::Boolean => {
            *at += 1;
            json!(b[*at - 1] == 1)
        }
        AvroType::Int | AvroType::Long => json!(read_long(b, at)),
        AvroType::Float => {
            *at += 4;
            json!(f32::from_le_bytes(b[*at - 4..*at].try_into().unwrap()))
        }
        AvroType::Double => {
            *at += 8;
            json!(f64::from_le_bytes(b[*at - 8..*at].try_into().unwrap()))
        }
        AvroType::Bytes | AvroType::String => {
            let n = read_long(b, at) as usize;
            *at += n;
            let s = &b[*at - n..*at];
            match ty {
                AvroType::String => json!(std::str::from_utf8(s).unwrap()),
                _ => json!(s.len()),
            }
        }
        AvroType::Array(items) => {
            let mut out = Vec::new();
            loop {
                let n = read_long(b, at);
                if n == 0 {
                    break;
                }
                for _ in 0..n {
                    out.push(decode(items, b, at));
                }
            }
            Value::Array(out)
        }
        AvroType::Union(branches) => {
            let i = read_long(b, at) as usize;
            decode(&branches[i], b, at)
        }
        AvroType::Record(r) => Value::Object(
            r.fields
                .iter()
                .map(|f| (f.name.clone(), decode(&f.ty, b, at)))
                .collect(),
        ),
    }
}

#[test]
fn longs_are_zigzag_varints() {
    for (v, bytes) in [
        (0i64, vec![0u8]),
        (-1, vec![1]),
        (1, vec![2]),
        (63, vec![0x7e]),
        (64, vec![0x80, 0x01]),
        (-65, vec![0x81, 0x01]),
    ] {
        let mut out = Vec::new();
        write_long(&mut out, v);
        assert_eq!(out, bytes, "{v}");
        assert_eq!(read_long(&out, &mut 0), v);
    }
    for v in [i64::MIN, i64::MAX, 3_000_000_000_001] {
        let mut out = Vec::new();
        write_long(&mut out, v);
        assert_eq!(read_long(&out, &mut 0), v);
    }
}

#[test]
fn the_alert_schema_parses_and_is_written_self_contained() {
    let s = AlertSchema::v11_1().unwrap();
    assert_eq!(s.record(AlertTable::DiaSource).fields.len(), 102);
    assert_eq!(s.record(AlertTable::DiaObject).fields.len(), 82);
    let doc: Value = serde_json::from_str(s.json()).unwrap();
    assert_eq!(doc["name"], "lsst.v11_1.alert");
    // Every record is defined once, where first used, and referred to by name after.
    for name in [
        "diaSource",
        "diaForcedSource",
        "diaObject",
        "ssSource",
        "mpc_orbits",
    ] {
        let defined = format!("\"name\":\"lsst.v11_1.{name}\"");
        assert_eq!(s.json().matches(&defined).count(), 1, "{name}");
    }
    assert_eq!(doc["fields"][3]["type"]["type"], "record");
    assert_eq!(doc["fields"][4]["type"][1]["items"], "lsst.v11_1.diaSource");
}

#[test]
fn bad_schemas_are_refused() {
    let mut names = Names::default();
    for bad in [
        "{",
        r#"{"type":"record","name":"a","fields":[{"name":"x","type":"nosuch"}]}"#,
        r#"{"type":"record","fields":[]}"#,
        r#"{"type":"record","name":"b","fields":[{"name":"x","type":[["int"]]}]}"#,
        r#""long""#,
    ] {
        assert!(names.parse(bad).is_err(), "{bad}");
    }
}

fn sources() -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new("diaSourceId", DataType::Int64, false),
        Field::new("visit", DataType::Int64, false),
        Field::new("detector", DataType::Int32, false),
        Field::new("diaObjectId", DataType::Int64, true),
        Field::new("midpointMjdTai", DataType::Float64, false),
        Field::new("ra", DataType::Float64, false),
        Field::new("dec", DataType::Float64, false),
        Field::new("x", DataType::Float32, false),
        Field::new("y", DataType::Float32, false),
        Field::new("psfFlux", DataType::Float32, true),
        Field::new("psfNdata", DataType::Int32, false),
        Field::new("trailNdata", DataType::Int32, false),
        Field::new("dipoleNdata", DataType::Int32, false),
        Field::new("timeProcessedMjdTai", DataType::Float64, false),
        Field::new("bboxSize", DataType::Int32, false),
        Field::new("isNegative", DataType::Boolean, true),
        Field::new("band", DataType::Utf8, true),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(Int64Array::from(vec![11, 12])),
            Arc::new(Int64Array::from(vec![9, 9])),
            Arc::new(Int32Array::from(vec![0, 0])),
            Arc::new(Int64Array::from(vec![Some(5), None])),
            Arc::new(Float64Array::from(vec![61010.5, 61010.5])),
            Arc::new(Float64Array::from(vec![62.5, 62.6])),
            Arc::new(Float64Array::from(vec![-36.5, -36.6])),
            Arc::new(Float32Array::from(vec![10.5, 20.0])),
            Arc::new(Float32Array::from(vec![30.0, 40.0])),
            Arc::new(Float32Array::from(vec![Some(1234.5), None])),
            Arc::new(Int32Array::from(vec![225, 225])),
            Arc::new(Int32Array::from(vec![0, 0])),
            Arc::new(Int32Array::from(vec![0, 0])),
            Arc::new(Float64Array::from(vec![61010.6, 61010.6])),
            Arc::new(Int32Array::from(vec![9, 12])),
            Arc::new(BooleanArray::from(vec![Some(false), Some(true)])),
            Arc::new(StringArray::from(vec![Some("r"), Some("r")])),
        ],
    )
    .unwrap()
}

#[test]
fn rows_encode_by_column_name_with_nulls_for_the_rest() {
    let s = AlertSchema::v11_1().unwrap();
    let rows = s.encode_rows(AlertTable::DiaSource, &sources()).unwrap();
    let ty = AvroType::Record(Arc::new(s.record(AlertTable::DiaSource).clone()));
    let mut at = 0;
    let first = decode(&ty, &rows[0], &mut at);
    assert_eq!(at, rows[0].len());
    assert_eq!(first["diaSourceId"], 11);
    assert_eq!(first["diaObjectId"], 5);
    assert_eq!(first["ra"], 62.5);
    assert_eq!(first["x"], 10.5);
    assert_eq!(first["psfFlux"], 1234.5);
    assert_eq!(first["band"], "r");
    assert_eq!(first["isNegative"], false);
    assert_eq!(first["bboxSize"], 9);
    assert_eq!(first["trailFlux"], Value::Null);
    let second = decode(&ty, &rows[1], &mut 0);
    assert_eq!(second["diaObjectId"], Value::Null);
    assert_eq!(second["psfFlux"], Value::Null);
    assert_eq!(second["isNegative"], true);
}

#[test]
fn a_missing_required_column_or_a_wrong_type_is_an_error() {
    let s = AlertSchema::v11_1().unwrap();
    let b = sources();
    let without = b.project(&[0, 1, 2, 4, 5, 6, 7, 8]).unwrap();
    let err = s.encode_rows(AlertTable::DiaSource, &without).unwrap_err();
    assert!(err.to_string().contains("psfNdata"), "{err}");
    let renamed = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("ra", DataType::Utf8, false)])),
        vec![Arc::new(StringArray::from(vec!["x"]))],
    )
    .unwrap();
    let err = s
        .encode_rows(AlertTable::DiaForcedSource, &renamed)
        .unwrap_err();
    assert!(err.to_string().contains("diaForcedSourceId"), "{err}");
    let err = RowEncoder::new(s.record(AlertTable::DiaSource), &{
        let mut cols = b.columns().to_vec();
        cols[5] = Arc::new(StringArray::from(vec!["a", "b"]));
        let mut fields: Vec<Field> = b.schema().fields().iter().map(|f| (**f).clone()).collect();
        fields[5] = Field::new("ra", DataType::Utf8, false);
        RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
    })
    .err()
    .unwrap();
    assert!(err.to_string().starts_with("field ra:"), "{err}");
}

#[test]
fn an_alert_holds_its_parts_in_schema_order() {
    let s = AlertSchema::v11_1().unwrap();
    let rows = s.encode_rows(AlertTable::DiaSource, &sources()).unwrap();
    let cutout = vec![7u8; 2880];
    let body = s
        .encode_alert(&AlertParts {
            dia_source_id: 12,
            dia_source: &rows[1],
            prv_dia_sources: vec![&rows[0]],
            cutout_difference: Some(&cutout),
            ..Default::default()
        })
        .unwrap();
    let names = {
        let mut n = Names::default();
        n.parse(s.json()).unwrap();
        n
    };
    let ty = AvroType::Record(names.record("lsst.v11_1.alert").unwrap());
    let mut at = 0;
    let alert = decode(&ty, &body, &mut at);
    assert_eq!(at, body.len());
    assert_eq!(alert["diaSourceId"], 12);
    assert_eq!(alert["diaSource"]["diaSourceId"], 12);
    assert_eq!(alert["prvDiaSources"][0]["diaSourceId"], 11);
    assert_eq!(alert["prvDiaForcedSources"], json!([]));
    assert_eq!(alert["diaObject"], Value::Null);
    assert_eq!(alert["cutoutDifference"], 2880);
    assert_eq!(alert["cutoutScience"], Value::Null);
    let framed = confluent_frame(&body);
    assert_eq!(&framed[..5], &[0, 0, 0, 0x04, 0x4d]);
}

#[test]
fn an_archive_from_before_the_solar_system_index_opens_and_gains_it() {
    let dir = crate::testdir::tempdir("alert-archive-old");
    {
        let conn = rusqlite::Connection::open(dir.join("alerts.sqlite3")).unwrap();
        conn.execute_batch(
            "CREATE TABLE alert (
               seq INTEGER PRIMARY KEY AUTOINCREMENT, alert_id INTEGER NOT NULL UNIQUE,
               dia_object_id INTEGER, visit INTEGER NOT NULL, mjd REAL NOT NULL,
               file TEXT NOT NULL, offset INTEGER NOT NULL, length INTEGER NOT NULL,
               archived_at REAL NOT NULL);
             INSERT INTO alert (alert_id, dia_object_id, visit, mjd, file, offset, length, archived_at)
               VALUES (5, 1, 9, 61000.0, 'old.avro', 0, 10, 0.0);",
        )
        .unwrap();
    }
    let archive = AlertArchive::open(&dir).unwrap();
    let old = archive.get(5).unwrap().unwrap();
    assert_eq!((old.dia_object_id, old.ss_object_id), (Some(1), None));
    let body = [1u8; 10];
    let new = NewAlert {
        alert_id: 6,
        dia_object_id: None,
        ss_object_id: Some(3),
        mjd: 61001.0,
        host: Some(crate::alerts::Host {
            object_id: 42,
            dist: 0.2,
            ln_p: -0.1,
        }),
        body: &body,
    };
    assert_eq!(archive.archive(10, 0, &[new]).unwrap(), 1);
    // The old alert has no host; the new one keeps its own.
    assert_eq!(old.host, None);
    assert_eq!(archive.get(6).unwrap().unwrap().host, new.host);
    let q = AlertQuery {
        ss_object_id: Some(3),
        limit: 5,
        ..Default::default()
    };
    assert_eq!(archive.find(&q).unwrap()[0].alert_id, 6);
    // Opened again, nothing changes.
    drop(archive);
    assert_eq!(AlertArchive::open(&dir).unwrap().count().unwrap(), 2);
}

#[test]
fn the_archive_keeps_each_alert_once_and_finds_it() {
    let dir = crate::testdir::tempdir("alert-archive");
    let archive = AlertArchive::open(&dir).unwrap();
    let bodies: Vec<Vec<u8>> = (0..5).map(|i| vec![i as u8; 100 + i]).collect();
    let alerts: Vec<NewAlert> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| NewAlert {
            alert_id: 100 + i as i64,
            // The last is a known asteroid's: it has an SSObject and no DIAObject.
            dia_object_id: (i < 4).then_some(1 + (i as i64 % 2)),
            ss_object_id: (i == 4).then_some(77),
            mjd: 61000.0 + i as f64,
            host: None,
            body: b,
        })
        .collect();
    assert_eq!(archive.archive(9, 0, &alerts[..3]).unwrap(), 3);
    // A visit archived again, with more alerts: only the new ones are added.
    assert_eq!(archive.archive(9, 0, &alerts).unwrap(), 2);
    assert_eq!(archive.archive(9, 0, &alerts).unwrap(), 0);
    assert_eq!(archive.count().unwrap(), 5);
    let found = archive
        .find(&AlertQuery {
            dia_object_id: Some(1),
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        found.iter().map(|a| a.alert_id).collect::<Vec<_>>(),
        vec![100, 102]
    );
    let asteroid = archive
        .find(&AlertQuery {
            ss_object_id: Some(77),
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        asteroid
            .iter()
            .map(|a| (a.alert_id, a.dia_object_id, a.ss_object_id))
            .collect::<Vec<_>>(),
        vec![(104, None, Some(77))]
    );
    assert_eq!(archive.read(&asteroid[0]).unwrap(), bodies[4]);
    for a in &found {
        let i = (a.alert_id - 100) as usize;
        assert_eq!(archive.read(a).unwrap(), bodies[i]);
    }
    let window = archive
        .find(&AlertQuery {
            since_mjd: Some(61001.0),
            until_mjd: Some(61003.0),
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        window.iter().map(|a| a.alert_id).collect::<Vec<_>>(),
        vec![101, 102]
    );
    let limited = archive
        .find(&AlertQuery {
            after_seq: Some(found[0].seq),
            limit: 2,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(limited.len(), 2);
    assert_eq!(limited[0].alert_id, 101);
    assert!(archive.get(999).unwrap().is_none());
    assert_eq!(archive.get(103).unwrap().unwrap().dia_object_id, Some(2));
    // Delivery cursors move forward only.
    assert_eq!(archive.cursor("kafka").unwrap(), 0);
    archive.advance("kafka", 4).unwrap();
    archive.advance("kafka", 2).unwrap();
    assert_eq!(archive.cursor("kafka").unwrap(), 4);
    // The files are Avro container files: magic, then the schema.
    let files: Vec<_> = std::fs::read_dir(dir.join("files"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 2);
    for f in files {
        let bytes = std::fs::read(f).unwrap();
        assert_eq!(&bytes[..4], MAGIC);
    }
}

#[test]
fn alerts_read_back_into_tables() {
    let s = AlertSchema::v11_1().unwrap();
    let rows = s.encode_rows(AlertTable::DiaSource, &sources()).unwrap();
    let cutout = vec![1u8; 100];
    let bodies: Vec<Vec<u8>> = (0..2)
        .map(|i| {
            s.encode_alert(&AlertParts {
                dia_source_id: 11 + i as i64,
                dia_source: &rows[i],
                prv_dia_sources: rows[..i].iter().map(Vec::as_slice).collect(),
                cutout_science: Some(&cutout),
                ..Default::default()
            })
            .unwrap()
        })
        .collect();
    let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
    let (src, obj) = crate::alerts::decode::alert_tables(&refs).unwrap();
    assert_eq!(src.num_rows(), 2);
    assert_eq!(obj.num_rows(), 2);
    let ids = src.column_by_name("diaSourceId").unwrap();
    let ids = ids.as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(ids.values(), &[11, 12]);
    let flux = src.column_by_name("psfFlux").unwrap();
    let flux = flux.as_any().downcast_ref::<Float32Array>().unwrap();
    assert_eq!(flux.value(0), 1234.5);
    assert!(flux.is_null(1));
    let band = src.column_by_name("band").unwrap();
    assert_eq!(
        band.as_any()
            .downcast_ref::<StringArray>()
            .unwrap()
            .value(1),
        "r"
    );
    // No DIAObject in these alerts: null rows.
    assert_eq!(obj.column_by_name("diaObjectId").unwrap().null_count(), 2);
    // A body with a byte too many is refused.
    let mut long = bodies[0].clone();
    long.push(0);
    assert!(crate::alerts::decode::alert_tables(&[&long]).is_err());
}

#[test]
fn users_keep_their_own_filters_by_name() {
    let dir = crate::testdir::tempdir("alert-filters");
    let archive = AlertArchive::open(&dir).unwrap();
    let f = archive
        .add_filter("ann", "bright", "diaSource.snr > 50")
        .unwrap()
        .unwrap();
    assert!(
        archive
            .add_filter("ann", "bright", "diaSource.snr > 5")
            .unwrap()
            .is_none()
    );
    let g = archive
        .add_filter("bob", "bright", "diaSource.snr > 5")
        .unwrap()
        .unwrap();
    assert_eq!(archive.filters("ann").unwrap(), vec![f.clone()]);
    assert_eq!(archive.filter(g.id).unwrap().unwrap().owner, "bob");
    assert!(!archive.delete_filter("ann", g.id).unwrap());
    assert!(archive.delete_filter("bob", g.id).unwrap());
    assert!(archive.filter(g.id).unwrap().is_none());
    assert_eq!(archive.last_seq().unwrap(), 0);
}
