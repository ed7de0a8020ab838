//! Unit tests of the validator: error positions and messages, grammar
//! corners beyond the lyonetia suite, and robustness against hostile input.

use super::*;

fn err(query: &str) -> AdqlError {
    match check(query) {
        Ok(()) => panic!("expected an error for {query:?}"),
        Err(e) => e,
    }
}

fn pos(query: &str) -> (usize, usize) {
    let e = err(query);
    (e.line, e.column)
}

fn ok(query: &str) {
    if let Err(e) = check(query) {
        panic!("{query:?} should be valid: {e}");
    }
}

#[test]
fn display_format() {
    let e = err("select x from y whereCIRCLE('fk5', 2, 3, 3)=x");
    assert_eq!(e.to_string(), format!("line 1, column 28: {}", e.message));
    assert_eq!(e.message, "expected end of query, found '('");
}

#[test]
fn missing_from_position() {
    let e = err("SELECT a, b\n  FROMX t");
    assert_eq!((e.line, e.column), (2, 9));
    assert_eq!(
        e.message,
        "expected FROM, found 't' ('FROMX' was read as a column alias)"
    );
    let e = err("SELECT A\n");
    assert_eq!((e.line, e.column), (1, 9));
    assert_eq!(e.message, "expected FROM, found end of query");
    let e = err("select x fromy where a = 1");
    assert_eq!((e.line, e.column), (1, 16));
    assert_eq!(
        e.message,
        "expected FROM, found 'where' ('fromy' was read as a column alias)"
    );
}

#[test]
fn reserved_word_position() {
    let e = err("SELECT ra,\n       distance FROM stars");
    assert_eq!((e.line, e.column), (2, 8));
    assert!(e.message.contains("\"distance\""), "{}", e.message);
    assert_eq!(pos("SELECT * FROM t AS size"), (1, 20));
    assert_eq!(pos("SELECT * FROM distinct"), (1, 15));
}

#[test]
fn lexical_error_positions() {
    assert_eq!(pos("SELECT _weird FROM t"), (1, 8));
    assert_eq!(pos("SELECT mag FROM %s"), (1, 17));
    assert_eq!(pos("SELECT 'abc FROM t"), (1, 8));
    // Columns count characters, so non-ASCII text before the error is fine.
    assert_eq!(pos("SELECT 'ééé', x FROM t WHERE 'ü' ~= 1"), (1, 34));
}

#[test]
fn condition_errors_point_after_the_value() {
    let e = err("select x from y where Point('fk5',2,3)");
    assert_eq!((e.line, e.column), (1, 39));
    assert!(
        e.message.starts_with("expected a comparison"),
        "{}",
        e.message
    );
    assert_eq!(pos("SELECT * FROM y WHERE y u 2"), (1, 25));
    assert_eq!(pos("SELECT * from a join b on foo"), (1, 30));
    assert_eq!(pos("SELECT * FROM t WHERE a AND b > 1"), (1, 25));
}

#[test]
fn function_errors() {
    let e = err("SELECT id, my_undefined_function(ra, dec) FROM t");
    assert_eq!((e.line, e.column), (1, 12));
    assert!(e.message.contains("unknown function"), "{}", e.message);
    let e = err("select x from y where ABS(y,z)<3");
    assert_eq!(e.message, "ABS takes exactly 1 argument, got 2");
    let e = err("SELECT COALESCE() FROM t");
    assert_eq!(e.message, "COALESCE takes at least 1 argument, got 0");
    let e = err("select x from y where CIRCLE('fk5', 2, 3)=x");
    assert_eq!(e.column, 23);
    assert!(
        e.message.starts_with("invalid arguments for CIRCLE"),
        "{}",
        e.message
    );
    assert_eq!(pos("SELECT DISTANCE(1, 2, 3) FROM t"), (1, 8));
    assert_eq!(pos("SELECT ivo_hasword(a) FROM t"), (1, 8));
    assert_eq!(pos("SELECT nJy_to_abmag(f, g) FROM t"), (1, 8));
}

#[test]
fn geometry_typing() {
    assert_eq!(pos("SELECT 'a' || POINT('icrs', 3, 4) FROM t"), (1, 15));
    assert_eq!(pos("SELECT 1 + CIRCLE(1, 2, 3) FROM t"), (1, 12));
    assert_eq!(pos("SELECT ABS(POINT(1, 2)) FROM t"), (1, 12));
    ok("SELECT CENTROID(3), AREA(CIRCLE(1, 2, 3)) FROM t");
    assert!(check("SELECT AREA(1 + 2) FROM t").is_err());
    ok("SELECT DISTANCE(p, POINT(1, 2)), DISTANCE(1, 2, 3, 4) FROM t");
    assert!(check("SELECT DISTANCE(1, 2) FROM t").is_err());
    ok("SELECT POLYGON(POINT(1, 2), p, CENTROID(c)) FROM t");
    ok("SELECT CIRCLE('ICRS', POINT(1, 2), 0.5), BOX(p, 1, 2) FROM t");
    ok("SELECT ivo_healpix_index(6, ra, dec), ivo_healpix_index(6, p) FROM t");
}

#[test]
fn clause_numbers() {
    assert_eq!(pos("SELECT TOP -10 a FROM t"), (1, 12));
    assert_eq!(pos("SELECT a FROM t OFFSET 10.5"), (1, 24));
    ok("SELECT TOP 5 a FROM t ORDER BY 1 DESC OFFSET 10");
}

#[test]
fn grammar_corners() {
    ok("SELECT CASE WHEN a > 1 THEN 'big' ELSE 'small' END AS size_class FROM t");
    ok("SELECT CASE a WHEN 1 THEN 'one' WHEN 2 THEN 'two' END FROM t");
    ok("SELECT NULLIF(a, 0), COALESCE(a, b, 0) FROM t");
    ok("SELECT flags & 0x0F, a | b, a ^ b, ~a FROM t WHERE (flags & 4) = 4");
    ok("SELECT * FROM t1 CROSS JOIN t2");
    assert!(check("SELECT * FROM t1 CROSS JOIN t2 ON t1.a = t2.a").is_err());
    assert!(check("SELECT * FROM t1 NATURAL JOIN t2 USING (a)").is_err());
    ok("SELECT * FROM t WHERE a NOT BETWEEN 1 AND 2 AND b NOT IN (1, 2) AND c NOT LIKE 'x%'");
    ok("SELECT * FROM t WHERE NOT (a = 1 OR b IS NOT NULL) AND EXISTS (SELECT 1 FROM u)");
    ok("SELECT * FROM ((SELECT a FROM t) UNION ALL (SELECT a FROM u)) AS q");
    ok("SELECT * FROM ((SELECT a FROM t) AS x JOIN u ON x.a = u.a)");
    ok("SELECT * FROM t WHERE a IN ((SELECT a FROM u) EXCEPT (SELECT a FROM v))");
    ok("WITH q (a, b) AS (SELECT a, b FROM t) SELECT * FROM q");
    ok("SELECT CAST(a AS DOUBLE PRECISION), CAST(b AS VARCHAR(8)), IN_UNIT(c, 'deg') FROM t");
    assert!(check("SELECT IN_UNIT(c, unit) FROM t").is_err());
    assert!(check("SELECT a FROM t WHERE a > (SELECT MAX(a) FROM t)").is_err());
    assert!(check("SELECT a FROM t;").is_err());
    assert!(check("SELECT a FROM t ORDER BY a UNION SELECT a FROM u").is_err());
    assert!(check("SELECT t.* FROM t WHERE t.* = 1").is_err());
    assert!(check("SELECT a > 1 FROM t").is_err());
    assert!(check("SELECT * FROM (t1)").is_err());
}

#[test]
fn declared_user_functions() {
    let udfs = [UserFunction::new("eso_intersection", 2)];
    let q = "SELECT * FROM t WHERE ESO_INTERSECTION(a, b) > 0.8";
    assert!(check(q).is_err());
    assert_eq!(check_with(q, &udfs), Ok(()));
    let e = check_with("SELECT eso_intersection(a) FROM t", &udfs).expect_err("arity");
    assert_eq!(
        e.message,
        "eso_intersection takes exactly 2 arguments, got 1"
    );
}

#[test]
fn function_table_is_consistent() {
    for f in FUNCTIONS {
        assert!(f.min_args <= f.max_args, "{}", f.name);
        assert!(
            !f.description.is_empty() && !f.form.is_empty(),
            "{}",
            f.name
        );
        assert_eq!(lookup(f.name), Some(f));
    }
}

#[test]
fn empty_and_garbage_input() {
    assert_eq!(pos(""), (1, 1));
    assert_eq!(pos("   \n  -- only a comment"), (1, 1));
    assert_eq!(pos("SELECT a\n  -- a comment\n\n"), (1, 9));
    for input in [
        "\u{0}",
        "SELECT \u{feff} FROM t",
        "SELECT \"unterminated",
        "((((",
        "))))",
        "SELECT * FROM t WHERE a = ",
        "SELECT CAST(",
        "SELECT CASE",
        "SELECT COUNT(",
        "SELECT * FROM (",
        "SELECT * FROM t JOIN",
        "WITH",
        "WITH a AS (",
        "SELECT POLYGON(",
        "\u{1F600}",
    ] {
        assert!(check(input).is_err(), "{input:?}");
    }
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A deterministic pseudo-random walk over bytes and ADQL fragments.
    let fragments = [
        "SELECT ",
        "FROM ",
        "WHERE ",
        "(",
        ")",
        "'",
        "\"",
        "--",
        "\n",
        "a",
        ".",
        "*",
        ",",
        "1",
        "0x",
        "e",
        "JOIN ",
        "ON ",
        "IN ",
        "NOT ",
        "CASE ",
        "WHEN ",
        "END ",
        "POINT(",
        "||",
        "é",
        "\u{0}",
        "\u{10FFFF}",
        "UNION ",
        "WITH ",
        "AS ",
        "BETWEEN ",
        "AND ",
    ];
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..2000 {
        let mut query = String::new();
        for _ in 0..(state % 40) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let pick = usize::try_from(state % fragments.len() as u64).unwrap_or(0);
            query.push_str(fragments[pick]);
        }
        let _ = check(&query);
        let bytes: Vec<u8> = query.bytes().rev().collect();
        let _ = check(&String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let n = 100_000;
    let query = format!("SELECT {}1{} FROM t", "(".repeat(n), ")".repeat(n));
    let e = err(&query);
    assert!(e.message.contains("nested too deeply"), "{}", e.message);

    let query = format!("SELECT {}1 FROM t", "- ".repeat(n));
    assert!(err(&query).message.contains("nested too deeply"));

    let query = format!("SELECT * FROM t WHERE {}a = 1", "NOT ".repeat(n));
    assert!(err(&query).message.contains("nested too deeply"));

    let query = format!(
        "{}SELECT * FROM t{}",
        "SELECT * FROM (".repeat(n),
        ") AS q".repeat(n)
    );
    assert!(err(&query).message.contains("nested too deeply"));

    let query = format!(
        "SELECT * FROM t WHERE a IN {}SELECT a FROM u{}",
        "(".repeat(n),
        ")".repeat(n)
    );
    assert!(check(&query).is_err());
}

#[test]
fn nesting_just_under_the_limit_is_fine() {
    // Each parenthesis level costs one unit of depth plus the select query
    // and the outer expression; keep a small margin.
    let n = MAX_DEPTH - 4;
    ok(&format!(
        "SELECT {}1{} FROM t",
        "(".repeat(n),
        ")".repeat(n)
    ));
    let n = MAX_DEPTH / 3;
    let mut query = String::from("SELECT a FROM t");
    for _ in 0..n {
        query = format!("SELECT a FROM t WHERE a IN ({query})");
    }
    ok(&query);
    let n = MAX_DEPTH / 2 - 2;
    let mut query = String::from("SELECT * FROM t");
    for _ in 0..n {
        query = format!("SELECT * FROM ({query}) AS q");
    }
    ok(&query);
}
