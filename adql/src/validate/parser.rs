//! Recursive-descent parser for the ADQL 2.1 grammar, used only to validate:
//! it builds no syntax tree, just a small per-expression summary ([`Expr`])
//! that is enough for the typing rules the grammar implies (geometry values
//! cannot enter arithmetic or string operators, coordinate-system literals,
//! point-versus-number arguments of geometry constructors, conditions versus
//! values). It owns the grammar, the function-signature checks and the
//! nesting limit that keeps hostile input from overflowing the stack.
//!
//! Expressions use one precedence-climbing (Pratt) parser for both boolean
//! conditions and values, so `(a > 1)` and `(a + 1) > 2` need no
//! backtracking; parenthesised FROM items and subqueries share one "cover"
//! rule ([`Parser::paren_item`]) for the same reason. Parsing is therefore
//! linear in the number of tokens.

use super::AdqlError;
use super::functions::{self, FunctionKind, FunctionSig, UserFunction, ValueType};
use super::keywords::is_reserved;
use super::lexer::{Tk, Token};

/// Deepest nesting of parentheses, function calls, subqueries and prefix
/// operators accepted. Real queries stay far below; the bound keeps the
/// recursion (a few small frames per level) well inside a 2 MiB thread stack.
pub const MAX_DEPTH: usize = 200;

/// Errors are boxed inside the parser: a one-word error keeps every
/// `Result` (and so every frame of the recursion) small.
type PResult<T> = Result<T, Box<AdqlError>>;

/// Geometry flavours the typing rules distinguish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Geo {
    Point,
    Shape,
}

/// Static type of an expression, as far as it can be known without a schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    /// A search condition (comparison, BETWEEN, ...): not a value in ADQL.
    Cond,
    Num,
    Str,
    Geo(Geo),
    Null,
    /// Column references, user-defined functions and the like.
    Unknown,
}

/// Literal kinds, needed because a coordinate system must be a string literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lit {
    None,
    Num,
    Str,
    Null,
}

/// What the parser remembers about a parsed expression.
#[derive(Debug, Clone, Copy)]
struct Expr {
    ty: Ty,
    /// A `<value_expression_primary>` of the BNF (literal, column, aggregate,
    /// CAST, COALESCE, parenthesised expression): the only non-geometry forms
    /// the grammar admits where a geometry is expected.
    primary: bool,
    lit: Lit,
    /// Index of the expression's first token, for error positions.
    at: usize,
}

impl Expr {
    fn new(ty: Ty, at: usize) -> Self {
        Self {
            ty,
            primary: false,
            lit: Lit::None,
            at,
        }
    }

    fn primary(ty: Ty, at: usize) -> Self {
        Self {
            ty,
            primary: true,
            lit: Lit::None,
            at,
        }
    }

    fn literal(ty: Ty, lit: Lit, at: usize) -> Self {
        Self {
            ty,
            primary: true,
            lit,
            at,
        }
    }

    fn cond(at: usize) -> Self {
        Self::new(Ty::Cond, at)
    }

    fn is_cond(&self) -> bool {
        self.ty == Ty::Cond
    }

    /// May stand where a number is expected (strings may: ADQL admits
    /// `'30' * 2`, and `POINT('ICRS', x, 'sy')` is accepted by the suite).
    fn numeric_ok(&self) -> bool {
        !matches!(self.ty, Ty::Geo(_) | Ty::Cond)
    }

    /// May stand where the BNF's `<coord_value>` (a point) is expected.
    fn point_ok(&self) -> bool {
        matches!(self.ty, Ty::Geo(Geo::Point) | Ty::Unknown | Ty::Null)
    }

    /// May stand where a `<geometry_value_expression>` is expected.
    fn geometry_ok(&self) -> bool {
        matches!(self.ty, Ty::Geo(_) | Ty::Unknown | Ty::Null) || self.primary
    }
}

/// What a parenthesised item turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Paren {
    /// `( query )`: a subquery, derived table or parenthesised set operand.
    Query,
    /// `( joined table )`.
    Table,
}

/// Kind of a FROM-clause operand, for the join-condition rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TableKind {
    Named,
    Derived,
    ParenJoin,
}

/// Predicate operators that follow a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pred {
    Compare,
    Between,
    In,
    Like,
    Is,
}

/// Binding powers of the Pratt parser; higher binds tighter.
const BP_OR: u8 = 1;
const BP_AND: u8 = 2;
const BP_NOT: u8 = 3;
const BP_PREDICATE: u8 = 4;
/// Right operands of predicates: value operators only.
const BP_VALUE: u8 = 5;
const BP_UNARY: u8 = 10;

/// Clause keywords that can never start an expression; for these the error
/// message does not suggest quoting.
const CLAUSE_WORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP",
    "HAVING",
    "ORDER",
    "BY",
    "UNION",
    "INTERSECT",
    "EXCEPT",
    "OFFSET",
    "AS",
    "ON",
    "USING",
    "JOIN",
    "INNER",
    "LEFT",
    "RIGHT",
    "FULL",
    "NATURAL",
    "CROSS",
    "OUTER",
    "AND",
    "OR",
    "IS",
    "IN",
    "BETWEEN",
    "LIKE",
    "ILIKE",
    "ASC",
    "DESC",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "DISTINCT",
    "ALL",
    "TOP",
    "WITH",
];

pub(crate) struct Parser<'a> {
    toks: Vec<Token>,
    /// Returned for any index past the end, so lookahead never panics.
    eof: Token,
    pos: usize,
    depth: usize,
    udfs: &'a [UserFunction],
}

/// Short human description of a token for "found ..." messages.
fn describe(t: &Token) -> String {
    const MAX: usize = 40;
    let short = |s: &str| -> String {
        if s.chars().count() > MAX {
            let head: String = s.chars().take(MAX).collect();
            format!("{head}...")
        } else {
            s.to_string()
        }
    };
    match t.kind {
        Tk::Eof => "end of query".to_string(),
        Tk::Str => format!("string '{}'", short(&t.text)),
        Tk::Delimited => format!("\"{}\"", short(&t.text)),
        _ => format!("'{}'", short(&t.text)),
    }
}

fn arity_text(min: usize, max: usize) -> String {
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    if min == max {
        format!("exactly {min} argument{}", plural(min))
    } else if max == usize::MAX {
        format!("at least {min} argument{}", plural(min))
    } else {
        format!("{min} to {max} arguments")
    }
}

fn value_type(t: ValueType) -> Ty {
    match t {
        ValueType::Numeric => Ty::Num,
        ValueType::Text => Ty::Str,
        ValueType::Point => Ty::Geo(Geo::Point),
        ValueType::Shape => Ty::Geo(Geo::Shape),
        ValueType::Any => Ty::Unknown,
    }
}

/// Applies the optional leading coordinate-system argument of POINT, CIRCLE,
/// BOX and POLYGON: a string literal first argument is always the coordinate
/// system (as a parser trying `[coord_sys ,]` first would commit to it);
/// NULL or an untyped first argument may be either.
fn with_coordsys(args: &[Expr], shape: impl Fn(&[Expr]) -> bool) -> bool {
    let Some((first, rest)) = args.split_first() else {
        return shape(args);
    };
    let forced = first.lit == Lit::Str;
    let possible = forced || matches!(first.ty, Ty::Null | Ty::Unknown | Ty::Str);
    (possible && shape(rest)) || (!forced && shape(args))
}

impl<'a> Parser<'a> {
    pub(crate) fn new(toks: Vec<Token>, udfs: &'a [UserFunction]) -> Self {
        let eof = toks.last().cloned().unwrap_or(Token {
            kind: Tk::Eof,
            text: String::new(),
            line: 1,
            col: 1,
        });
        Self {
            toks,
            eof,
            pos: 0,
            depth: 0,
            udfs,
        }
    }

    // ----------------------------------------------------------------------
    // Token helpers
    // ----------------------------------------------------------------------

    fn tok_at(&self, i: usize) -> &Token {
        self.toks.get(i).unwrap_or(&self.eof)
    }

    fn tok(&self) -> &Token {
        self.tok_at(self.pos)
    }

    fn kind(&self) -> Tk {
        self.tok().kind
    }

    fn kind_at(&self, offset: usize) -> Tk {
        self.tok_at(self.pos + offset).kind
    }

    fn is_kw_at(&self, offset: usize, kw: &str) -> bool {
        let t = self.tok_at(self.pos + offset);
        t.kind == Tk::Word && t.text.eq_ignore_ascii_case(kw)
    }

    fn is_kw(&self, kw: &str) -> bool {
        self.is_kw_at(0, kw)
    }

    fn bump(&mut self) {
        if self.pos < self.toks.len() {
            self.pos += 1;
        }
    }

    fn eat(&mut self, kind: Tk) -> bool {
        if self.kind() == kind {
            self.bump();
            true
        } else {
            false
        }
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        if self.is_kw(kw) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, kind: Tk, what: &str) -> PResult<()> {
        if self.eat(kind) {
            Ok(())
        } else {
            Err(self.unexpected(what))
        }
    }

    fn expect_kw(&mut self, kw: &str) -> PResult<()> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            Err(self.unexpected(kw))
        }
    }

    fn error_at(&self, idx: usize, message: impl Into<String>) -> Box<AdqlError> {
        let t = self.tok_at(idx);
        Box::new(AdqlError {
            line: t.line,
            column: t.col,
            message: message.into(),
        })
    }

    fn unexpected(&self, expected: &str) -> Box<AdqlError> {
        self.error_at(
            self.pos,
            format!("expected {expected}, found {}", describe(self.tok())),
        )
    }

    fn reserved_error(&self, idx: usize) -> Box<AdqlError> {
        let text = &self.tok_at(idx).text;
        self.error_at(
            idx,
            format!(
                "'{text}' is a reserved word and cannot be used as a name; \
                 write it as a delimited identifier (\"{text}\") instead"
            ),
        )
    }

    fn with_misplaced(&self) -> Box<AdqlError> {
        self.error_at(
            self.pos,
            "WITH is only allowed at the start of the whole query \
             (common table expressions cannot be nested in subqueries)",
        )
    }

    /// Runs `f` one nesting level deeper, failing cleanly past [`MAX_DEPTH`].
    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> PResult<T>) -> PResult<T> {
        if self.depth >= MAX_DEPTH {
            return Err(self.too_deep());
        }
        self.depth += 1;
        let result = f(self);
        self.depth -= 1;
        result
    }

    // Error builders used on recursive paths live in their own never-inlined
    // functions: their temporaries would otherwise enlarge every stack frame
    // of the recursion (unoptimised builds give each temporary its own slot).
    #[cold]
    #[inline(never)]
    fn too_deep(&self) -> Box<AdqlError> {
        self.error_at(
            self.pos,
            format!("query nested too deeply (more than {MAX_DEPTH} levels)"),
        )
    }

    #[cold]
    #[inline(never)]
    fn predicate_on_condition(&self) -> Box<AdqlError> {
        self.error_at(
            self.pos,
            format!("{} cannot be applied to a condition", describe(self.tok())),
        )
    }

    #[cold]
    #[inline(never)]
    fn reserved_in_expression(&self, at: usize) -> Box<AdqlError> {
        let text = &self.tok_at(at).text;
        let upper = text.to_ascii_uppercase();
        if CLAUSE_WORDS.contains(&upper.as_str()) {
            self.error_at(at, format!("expected an expression, found '{text}'"))
        } else if functions::lookup(text).is_some() {
            self.error_at(
                at,
                format!(
                    "'{text}' is the reserved name of an ADQL function; to use it as a \
                     column name write it as a delimited identifier (\"{text}\")"
                ),
            )
        } else {
            self.reserved_error(at)
        }
    }

    // ----------------------------------------------------------------------
    // Queries
    // ----------------------------------------------------------------------

    /// `[WITH ...] select_expression` followed by the end of the input.
    pub(crate) fn parse_query(&mut self) -> PResult<()> {
        if self.eat_kw("WITH") {
            self.with_list()?;
        }
        self.select_expression(false)?;
        match self.kind() {
            Tk::Eof => Ok(()),
            Tk::Semicolon => Err(self.error_at(
                self.pos,
                "unexpected ';': an ADQL query is a single statement without a terminator",
            )),
            _ => Err(self.unexpected("end of query")),
        }
    }

    fn with_list(&mut self) -> PResult<()> {
        loop {
            self.identifier("a name for the WITH query")?;
            if self.eat(Tk::LParen) {
                self.identifier_list()?;
                self.expect(Tk::RParen, "')'")?;
            }
            self.expect_kw("AS")?;
            if self.kind() != Tk::LParen {
                return Err(self.unexpected("'(' and a query"));
            }
            self.query_in_parens()?;
            if !self.eat(Tk::Comma) {
                return Ok(());
            }
        }
    }

    /// `( query )`, rejecting parenthesised joins.
    fn query_in_parens(&mut self) -> PResult<()> {
        let inner = self.pos + 1;
        match self.paren_item()? {
            Paren::Query => Ok(()),
            Paren::Table => Err(self.error_at(
                inner,
                format!("expected SELECT, found {}", describe(self.tok_at(inner))),
            )),
        }
    }

    /// Set operations, then ORDER BY and OFFSET. With `first_done`, the first
    /// set operand has already been parsed by the caller.
    fn select_expression(&mut self, first_done: bool) -> PResult<()> {
        self.set_expression(first_done)?;
        self.order_offset()
    }

    fn set_expression(&mut self, first_done: bool) -> PResult<()> {
        self.set_term(first_done)?;
        while self.is_kw("UNION") || self.is_kw("EXCEPT") {
            self.bump();
            self.eat_kw("ALL");
            self.set_term(false)?;
        }
        Ok(())
    }

    /// INTERSECT binds tighter than UNION and EXCEPT.
    fn set_term(&mut self, first_done: bool) -> PResult<()> {
        if !first_done {
            self.set_primary()?;
        }
        while self.eat_kw("INTERSECT") {
            self.eat_kw("ALL");
            self.set_primary()?;
        }
        Ok(())
    }

    fn set_primary(&mut self) -> PResult<()> {
        if self.is_kw("SELECT") {
            self.select_query()
        } else if self.kind() == Tk::LParen {
            self.query_in_parens()
        } else if self.is_kw("WITH") {
            Err(self.with_misplaced())
        } else {
            Err(self.unexpected("SELECT"))
        }
    }

    fn order_offset(&mut self) -> PResult<()> {
        if self.eat_kw("ORDER") {
            self.expect_kw("BY")?;
            loop {
                self.value()?;
                if !self.eat_kw("ASC") {
                    self.eat_kw("DESC");
                }
                if !self.eat(Tk::Comma) {
                    break;
                }
            }
        }
        if self.eat_kw("OFFSET") {
            self.unsigned_integer("OFFSET")?;
        }
        Ok(())
    }

    fn unsigned_integer(&mut self, clause: &str) -> PResult<()> {
        if self.eat(Tk::Int) {
            Ok(())
        } else {
            Err(self.error_at(
                self.pos,
                format!(
                    "{clause} needs an unsigned integer, found {}",
                    describe(self.tok())
                ),
            ))
        }
    }

    fn select_query(&mut self) -> PResult<()> {
        self.nested(|p| {
            p.expect_kw("SELECT")?;
            if !p.eat_kw("DISTINCT") {
                p.eat_kw("ALL");
            }
            if p.eat_kw("TOP") {
                p.unsigned_integer("TOP")?;
            }
            p.select_list()?;
            if !p.eat_kw("FROM") {
                return Err(p.missing_from());
            }
            loop {
                p.table_reference()?;
                if !p.eat(Tk::Comma) {
                    break;
                }
            }
            if p.eat_kw("WHERE") {
                p.condition()?;
            }
            if p.eat_kw("GROUP") {
                p.expect_kw("BY")?;
                loop {
                    p.value()?;
                    if !p.eat(Tk::Comma) {
                        break;
                    }
                }
            }
            if p.eat_kw("HAVING") {
                p.condition()?;
            }
            Ok(())
        })
    }

    /// "expected FROM" with a hint when a misspelt FROM (`fromy`) was just
    /// swallowed as a column alias.
    fn missing_from(&self) -> Box<AdqlError> {
        let mut err = self.unexpected("FROM");
        if let Some(prev) = self.pos.checked_sub(1).map(|i| self.tok_at(i)) {
            let looks_like_from = prev.kind == Tk::Word
                && prev.text.len() > 4
                && prev
                    .text
                    .get(..4)
                    .is_some_and(|h| h.eq_ignore_ascii_case("FROM"));
            if looks_like_from {
                err.message.push_str(" ('");
                err.message.push_str(&prev.text);
                err.message.push_str("' was read as a column alias)");
            }
        }
        err
    }

    fn select_list(&mut self) -> PResult<()> {
        loop {
            // A bare `*` is accepted anywhere in the list: the suite's ESO
            // queries mix it with columns (`SELECT ra, dec, *`).
            if !self.eat(Tk::Star) && !self.qualified_star()? {
                self.value()?;
                self.optional_alias()?;
            }
            if !self.eat(Tk::Comma) {
                return Ok(());
            }
        }
    }

    /// `qualifier.*` in the select list; consumes it and returns true, or
    /// leaves the position untouched and returns false.
    fn qualified_star(&mut self) -> PResult<bool> {
        let start = self.pos;
        let mut i = start;
        let mut parts = 0usize;
        loop {
            if !matches!(self.tok_at(i).kind, Tk::Word | Tk::Delimited) {
                return Ok(false);
            }
            parts += 1;
            if self.tok_at(i + 1).kind != Tk::Dot {
                return Ok(false);
            }
            i += 2;
            if self.tok_at(i).kind == Tk::Star {
                break;
            }
        }
        for part in (start..i).step_by(2) {
            let t = self.tok_at(part);
            if t.kind == Tk::Word && is_reserved(&t.text) {
                return Err(self.reserved_error(part));
            }
        }
        if parts > 3 {
            return Err(self.error_at(
                start,
                "a table qualifier has at most three parts (catalog.schema.table)",
            ));
        }
        self.pos = i + 1;
        Ok(true)
    }

    /// `[AS] alias` after a select item or table; returns whether one was there.
    fn optional_alias(&mut self) -> PResult<bool> {
        if self.eat_kw("AS") {
            self.identifier("an alias")?;
            return Ok(true);
        }
        let t = self.tok();
        let is_alias = match t.kind {
            Tk::Delimited => true,
            Tk::Word => !is_reserved(&t.text),
            _ => false,
        };
        if is_alias {
            self.bump();
        }
        Ok(is_alias)
    }

    /// A regular (non-reserved) or delimited identifier.
    fn identifier(&mut self, what: &str) -> PResult<()> {
        let t = self.tok();
        match t.kind {
            Tk::Delimited => {
                self.bump();
                Ok(())
            }
            Tk::Word if !is_reserved(&t.text) => {
                self.bump();
                Ok(())
            }
            Tk::Word if !CLAUSE_WORDS.iter().any(|w| t.text.eq_ignore_ascii_case(w)) => {
                Err(self.reserved_error(self.pos))
            }
            _ => Err(self.unexpected(what)),
        }
    }

    fn identifier_list(&mut self) -> PResult<()> {
        loop {
            self.identifier("a column name")?;
            if !self.eat(Tk::Comma) {
                return Ok(());
            }
        }
    }

    // ----------------------------------------------------------------------
    // FROM clause
    // ----------------------------------------------------------------------

    /// One comma-separated FROM item: a table, derived table or join chain.
    fn table_reference(&mut self) -> PResult<()> {
        self.table_primary()?;
        self.join_chain()?;
        Ok(())
    }

    fn table_primary(&mut self) -> PResult<TableKind> {
        if self.kind() == Tk::LParen {
            match self.paren_item()? {
                Paren::Query => {
                    self.derived_alias()?;
                    Ok(TableKind::Derived)
                }
                Paren::Table => Ok(TableKind::ParenJoin),
            }
        } else {
            self.table_name()?;
            self.optional_alias()?;
            Ok(TableKind::Named)
        }
    }

    fn derived_alias(&mut self) -> PResult<()> {
        if self.optional_alias()? {
            Ok(())
        } else {
            Err(self.unexpected("an alias for the subquery (e.g. AS sub)"))
        }
    }

    fn table_name(&mut self) -> PResult<()> {
        let start = self.pos;
        self.identifier("a table name")?;
        let mut parts = 1usize;
        while self.eat(Tk::Dot) {
            self.identifier("a table name")?;
            parts += 1;
        }
        if parts > 3 {
            return Err(self.error_at(
                start,
                "a table name has at most three parts (catalog.schema.table)",
            ));
        }
        Ok(())
    }

    /// Zero or more `[NATURAL] [join type] JOIN table [ON ... | USING (...)]`;
    /// returns whether any join was parsed.
    fn join_chain(&mut self) -> PResult<bool> {
        let mut joined = false;
        loop {
            let start = self.pos;
            let natural = self.eat_kw("NATURAL");
            let mut inner = false;
            let mut cross = false;
            if self.eat_kw("INNER") {
                inner = true;
            } else if self.eat_kw("LEFT") || self.eat_kw("RIGHT") || self.eat_kw("FULL") {
                self.eat_kw("OUTER");
            } else if self.eat_kw("CROSS") {
                cross = true;
            }
            if !self.eat_kw("JOIN") {
                if self.pos != start {
                    return Err(self.unexpected("JOIN"));
                }
                return Ok(joined);
            }
            if natural && cross {
                return Err(self.error_at(start, "a join cannot be both NATURAL and CROSS"));
            }
            let right = self.table_primary()?;
            let spec_at = self.pos;
            let has_spec = if self.eat_kw("ON") {
                self.condition()?;
                true
            } else if self.eat_kw("USING") {
                self.expect(Tk::LParen, "'(' and column names after USING")?;
                self.identifier_list()?;
                self.expect(Tk::RParen, "')'")?;
                true
            } else {
                false
            };
            if has_spec && (natural || cross) {
                return Err(self.error_at(
                    spec_at,
                    "NATURAL and CROSS joins take no ON or USING condition",
                ));
            }
            // The IVOA suite rejects `t1 INNER JOIN t2` without a condition
            // while DaCHS's tests accept `t1 JOIN t2` and `t1 INNER JOIN
            // (t2 JOIN t3)`; requiring a condition exactly when INNER is
            // spelled out before a table satisfies both.
            if inner && !has_spec && right != TableKind::ParenJoin {
                return Err(self.unexpected("ON or USING after INNER JOIN"));
            }
            joined = true;
        }
    }

    /// Parses a parenthesised item where the grammar allows either a query or
    /// a joined table (FROM items, set operands, IN and EXISTS subqueries):
    /// `( SELECT ... )`, `( (SELECT ...) UNION ... )`, `( t1 JOIN t2 )`,
    /// `( (SELECT ...) AS q JOIN t )`, nested arbitrarily.
    fn paren_item(&mut self) -> PResult<Paren> {
        self.nested(|p| {
            p.expect(Tk::LParen, "'('")?;
            let item = if p.is_kw("SELECT") {
                p.select_expression(false)?;
                Paren::Query
            } else if p.is_kw("WITH") {
                return Err(p.with_misplaced());
            } else if p.kind() == Tk::LParen {
                match p.paren_item()? {
                    Paren::Query => {
                        let continues_query = p.kind() == Tk::RParen
                            || ["UNION", "EXCEPT", "INTERSECT", "ORDER", "OFFSET"]
                                .iter()
                                .any(|kw| p.is_kw(kw));
                        if continues_query {
                            p.select_expression(true)?;
                            Paren::Query
                        } else {
                            p.derived_alias()?;
                            if !p.join_chain()? {
                                return Err(p.unexpected("JOIN"));
                            }
                            Paren::Table
                        }
                    }
                    Paren::Table => {
                        p.join_chain()?;
                        Paren::Table
                    }
                }
            } else if matches!(p.kind(), Tk::Word | Tk::Delimited) {
                p.table_primary()?;
                if !p.join_chain()? {
                    return Err(
                        p.unexpected("JOIN (parentheses in FROM enclose a join or a subquery)")
                    );
                }
                Paren::Table
            } else {
                return Err(p.unexpected("SELECT or a table name"));
            };
            p.expect(Tk::RParen, "')'")?;
            Ok(item)
        })
    }

    /// True when the tokens ahead are `(`... followed by SELECT or WITH.
    fn subquery_ahead(&self) -> bool {
        let mut i = self.pos;
        while self.tok_at(i).kind == Tk::LParen {
            i += 1;
        }
        i > self.pos && {
            let t = self.tok_at(i);
            t.kind == Tk::Word
                && (t.text.eq_ignore_ascii_case("SELECT") || t.text.eq_ignore_ascii_case("WITH"))
        }
    }

    // ----------------------------------------------------------------------
    // Conditions and values
    // ----------------------------------------------------------------------

    /// A search condition (WHERE, HAVING, ON, CASE WHEN).
    fn condition(&mut self) -> PResult<()> {
        let e = self.expr(0)?;
        self.need_cond(&e)
    }

    /// A value expression (select item, argument, ORDER BY term, ...).
    fn value(&mut self) -> PResult<Expr> {
        let e = self.expr(0)?;
        self.need_value(&e)?;
        Ok(e)
    }

    fn need_cond(&self, e: &Expr) -> PResult<()> {
        if e.is_cond() {
            Ok(())
        } else {
            Err(self.error_at(
                self.pos,
                format!(
                    "expected a comparison (=, <>, <, >, <=, >=, BETWEEN, IN, LIKE, ILIKE \
                     or IS NULL), found {}",
                    describe(self.tok())
                ),
            ))
        }
    }

    fn need_value(&self, e: &Expr) -> PResult<()> {
        if e.is_cond() {
            Err(self.error_at(
                e.at,
                "a condition cannot be used as a value (ADQL has no boolean expressions)",
            ))
        } else {
            Ok(())
        }
    }

    /// Operand of an arithmetic, bitwise or concatenation operator.
    fn need_operand(&self, e: &Expr, op: &str) -> PResult<()> {
        match e.ty {
            Ty::Cond => {
                Err(self.error_at(e.at, format!("a condition cannot be an operand of '{op}'")))
            }
            Ty::Geo(_) => Err(self.error_at(
                e.at,
                format!("a geometry value cannot be an operand of '{op}'"),
            )),
            _ => Ok(()),
        }
    }

    fn expr(&mut self, min_bp: u8) -> PResult<Expr> {
        self.nested(|p| p.expr_loop(min_bp))
    }

    fn expr_loop(&mut self, min_bp: u8) -> PResult<Expr> {
        let mut lhs = self.prefix()?;
        loop {
            if self.is_kw("OR") || self.is_kw("AND") {
                let bp = if self.is_kw("OR") { BP_OR } else { BP_AND };
                if bp < min_bp {
                    break;
                }
                self.need_cond(&lhs)?;
                self.bump();
                let rhs = self.expr(bp + 1)?;
                self.need_cond(&rhs)?;
                lhs = Expr::cond(lhs.at);
                continue;
            }
            if let Some((pred, negated)) = self.predicate_ahead() {
                if BP_PREDICATE < min_bp {
                    break;
                }
                if lhs.is_cond() {
                    return Err(self.predicate_on_condition());
                }
                self.predicate(pred, negated, &lhs)?;
                lhs = Expr::cond(lhs.at);
                continue;
            }
            let bp = match self.kind() {
                Tk::Concat | Tk::Pipe => 5,
                Tk::Caret => 6,
                Tk::Amp => 7,
                Tk::Plus | Tk::Minus => 8,
                Tk::Star | Tk::Slash => 9,
                _ => break,
            };
            if bp < min_bp {
                break;
            }
            let op = self.tok().text.clone();
            let concat = self.kind() == Tk::Concat;
            self.need_operand(&lhs, &op)?;
            self.bump();
            let rhs = self.expr(bp + 1)?;
            self.need_operand(&rhs, &op)?;
            lhs = Expr::new(if concat { Ty::Str } else { Ty::Num }, lhs.at);
        }
        Ok(lhs)
    }

    fn predicate_ahead(&self) -> Option<(Pred, bool)> {
        if matches!(
            self.kind(),
            Tk::Eq | Tk::Ne | Tk::Lt | Tk::Gt | Tk::Le | Tk::Ge
        ) {
            return Some((Pred::Compare, false));
        }
        let negated = self.is_kw("NOT");
        let offset = usize::from(negated);
        let pred = if self.is_kw_at(offset, "BETWEEN") {
            Pred::Between
        } else if self.is_kw_at(offset, "IN") {
            Pred::In
        } else if self.is_kw_at(offset, "LIKE") || self.is_kw_at(offset, "ILIKE") {
            Pred::Like
        } else if !negated && self.is_kw("IS") {
            Pred::Is
        } else {
            return None;
        };
        Some((pred, negated))
    }

    fn predicate(&mut self, pred: Pred, negated: bool, lhs: &Expr) -> PResult<()> {
        if negated {
            self.bump();
        }
        match pred {
            Pred::Compare => {
                self.bump();
                let rhs = self.expr(BP_VALUE)?;
                self.need_value(&rhs)
            }
            Pred::Between => {
                self.bump();
                let low = self.expr(BP_VALUE)?;
                self.need_value(&low)?;
                self.expect_kw("AND")?;
                let high = self.expr(BP_VALUE)?;
                self.need_value(&high)
            }
            Pred::Like => {
                let op = self.tok().text.to_ascii_uppercase();
                self.need_operand(lhs, &op)?;
                self.bump();
                let pattern = self.expr(BP_VALUE)?;
                self.need_operand(&pattern, &op)
            }
            Pred::In => {
                self.bump();
                self.in_values()
            }
            Pred::Is => {
                self.bump();
                self.eat_kw("NOT");
                self.expect_kw("NULL")
            }
        }
    }

    fn in_values(&mut self) -> PResult<()> {
        if self.kind() != Tk::LParen {
            return Err(self.unexpected("'(' after IN"));
        }
        if self.subquery_ahead() {
            return self.query_in_parens();
        }
        self.nested(|p| {
            p.bump();
            loop {
                p.value()?;
                if !p.eat(Tk::Comma) {
                    break;
                }
            }
            p.expect(Tk::RParen, "',' or ')'")
        })
    }

    fn prefix(&mut self) -> PResult<Expr> {
        let at = self.pos;
        match self.kind() {
            Tk::Int | Tk::Decimal | Tk::Approx | Tk::Hex => {
                self.bump();
                Ok(Expr::literal(Ty::Num, Lit::Num, at))
            }
            Tk::Str => {
                self.bump();
                Ok(Expr::literal(Ty::Str, Lit::Str, at))
            }
            Tk::Minus | Tk::Plus | Tk::Tilde => {
                let op = self.tok().text.clone();
                self.bump();
                let operand = self.expr(BP_UNARY)?;
                self.need_operand(&operand, &op)?;
                Ok(Expr::new(Ty::Num, at))
            }
            Tk::LParen => {
                if self.subquery_ahead() {
                    return Err(self.error_at(
                        at,
                        "ADQL allows subqueries only in FROM, after IN and after EXISTS",
                    ));
                }
                self.bump();
                let inner = self.expr(0)?;
                self.expect(Tk::RParen, "')'")?;
                Ok(Expr {
                    ty: inner.ty,
                    primary: true,
                    lit: Lit::None,
                    at,
                })
            }
            Tk::Word => self.word(),
            Tk::Delimited => self.column_reference(),
            _ => Err(self.unexpected("an expression")),
        }
    }

    /// An expression starting with a word: keyword construct, function call
    /// or column reference.
    fn word(&mut self) -> PResult<Expr> {
        let at = self.pos;
        let text = self.tok().text.clone();
        let upper = text.to_ascii_uppercase();
        let call = self.kind_at(1) == Tk::LParen;
        match upper.as_str() {
            "NOT" => {
                self.bump();
                let operand = self.expr(BP_NOT)?;
                self.need_cond(&operand)?;
                return Ok(Expr::cond(at));
            }
            "EXISTS" => {
                self.bump();
                if self.kind() != Tk::LParen {
                    return Err(self.unexpected("'(' and a subquery after EXISTS"));
                }
                self.query_in_parens()?;
                return Ok(Expr::cond(at));
            }
            "NULL" => {
                self.bump();
                return Ok(Expr::literal(Ty::Null, Lit::Null, at));
            }
            "TRUE" | "FALSE" => {
                self.bump();
                return Ok(Expr::primary(Ty::Unknown, at));
            }
            "CASE" => return self.case_expression(),
            "CAST" if call => return self.cast(),
            _ => {}
        }
        let reserved = is_reserved(&text);
        if call && (!reserved || functions::lookup(&text).is_some()) {
            return self.call(&text, &upper);
        }
        if reserved {
            return Err(self.reserved_in_expression(at));
        }
        self.column_reference()
    }

    fn column_reference(&mut self) -> PResult<Expr> {
        let at = self.pos;
        self.identifier("a column name")?;
        let mut parts = 1usize;
        while self.kind() == Tk::Dot {
            if self.kind_at(1) == Tk::Star {
                return Err(self.error_at(
                    at,
                    "'qualifier.*' is only allowed as an item of the select list",
                ));
            }
            self.bump();
            self.identifier("a column name")?;
            parts += 1;
        }
        if parts > 4 {
            return Err(self.error_at(
                at,
                "a column reference has at most four parts (catalog.schema.table.column)",
            ));
        }
        Ok(Expr::primary(Ty::Unknown, at))
    }

    fn case_expression(&mut self) -> PResult<Expr> {
        let at = self.pos;
        self.nested(|p| {
            p.bump();
            let simple = !p.is_kw("WHEN");
            if simple {
                p.value()?;
            }
            if !p.is_kw("WHEN") {
                return Err(p.unexpected("WHEN"));
            }
            while p.eat_kw("WHEN") {
                if simple {
                    p.value()?;
                } else {
                    p.condition()?;
                }
                p.expect_kw("THEN")?;
                p.value()?;
            }
            if p.eat_kw("ELSE") {
                p.value()?;
            }
            p.expect_kw("END")?;
            Ok(Expr::primary(Ty::Unknown, at))
        })
    }

    fn cast(&mut self) -> PResult<Expr> {
        let at = self.pos;
        self.nested(|p| {
            p.bump();
            p.bump();
            p.value()?;
            p.expect_kw("AS")?;
            let ty = p.cast_target()?;
            p.expect(Tk::RParen, "')'")?;
            Ok(Expr::primary(ty, at))
        })
    }

    fn cast_target(&mut self) -> PResult<Ty> {
        let upper = if self.kind() == Tk::Word {
            self.tok().text.to_ascii_uppercase()
        } else {
            String::new()
        };
        let ty = match upper.as_str() {
            "SMALLINT" | "INTEGER" | "BIGINT" | "REAL" => Ty::Num,
            "DOUBLE" => {
                self.bump();
                self.expect_kw("PRECISION")?;
                return Ok(Ty::Num);
            }
            "CHAR" | "VARCHAR" => {
                self.bump();
                if self.eat(Tk::LParen) {
                    if !self.eat(Tk::Int) {
                        return Err(self.unexpected("a length"));
                    }
                    self.expect(Tk::RParen, "')'")?;
                }
                return Ok(Ty::Str);
            }
            "TIMESTAMP" => Ty::Unknown,
            "POINT" => Ty::Geo(Geo::Point),
            "CIRCLE" | "POLYGON" => Ty::Geo(Geo::Shape),
            _ => {
                return Err(self.error_at(
                    self.pos,
                    format!(
                        "expected an ADQL type (SMALLINT, INTEGER, BIGINT, REAL, DOUBLE \
                         PRECISION, CHAR(n), VARCHAR(n), TIMESTAMP, POINT, CIRCLE or \
                         POLYGON), found {}",
                        describe(self.tok())
                    ),
                ));
            }
        };
        self.bump();
        Ok(ty)
    }

    // ----------------------------------------------------------------------
    // Function calls
    // ----------------------------------------------------------------------

    fn call(&mut self, name: &str, upper: &str) -> PResult<Expr> {
        let at = self.pos;
        self.nested(|p| {
            p.bump();
            p.bump();
            if matches!(upper, "COUNT" | "AVG" | "MIN" | "MAX" | "SUM") {
                return p.aggregate(at, upper);
            }
            let mut args = Vec::new();
            if !p.eat(Tk::RParen) {
                loop {
                    args.push(p.value()?);
                    if !p.eat(Tk::Comma) {
                        break;
                    }
                }
                p.expect(Tk::RParen, "',' or ')'")?;
            }
            p.check_call(at, name, upper, &args)
        })
    }

    fn aggregate(&mut self, at: usize, upper: &str) -> PResult<Expr> {
        if upper == "COUNT" && self.eat(Tk::Star) {
            self.expect(Tk::RParen, "')'")?;
            return Ok(Expr::primary(Ty::Num, at));
        }
        if !self.eat_kw("DISTINCT") {
            self.eat_kw("ALL");
        }
        let arg = self.value()?;
        self.expect(Tk::RParen, "')'")?;
        let ty = match upper {
            "AVG" | "SUM" => {
                self.need_operand(&arg, upper)?;
                Ty::Num
            }
            "COUNT" => Ty::Num,
            _ => arg.ty,
        };
        Ok(Expr::primary(ty, at))
    }

    fn check_call(&self, at: usize, name: &str, upper: &str, args: &[Expr]) -> PResult<Expr> {
        if let Some(sig) = functions::lookup(name) {
            if !sig.accepts_arity(args.len()) {
                return Err(self.error_at(
                    at,
                    format!(
                        "{} takes {}, got {}",
                        sig.name,
                        arity_text(sig.min_args, sig.max_args),
                        args.len()
                    ),
                ));
            }
            let ty = if sig.kind == FunctionKind::Geometry && !sig.udf {
                self.check_geometry(at, upper, args)?
            } else {
                self.check_plain_args(at, sig, args)?;
                value_type(sig.returns)
            };
            // UDF results and COALESCE/NULLIF count as primaries; built-in
            // numeric and string function results do not.
            let primary = sig.udf || matches!(upper, "COALESCE" | "NULLIF");
            return Ok(Expr {
                ty,
                primary,
                lit: Lit::None,
                at,
            });
        }
        if let Some(udf) = self.udfs.iter().find(|u| u.name.eq_ignore_ascii_case(name)) {
            if !udf.accepts_arity(args.len()) {
                return Err(self.error_at(
                    at,
                    format!(
                        "{} takes {}, got {}",
                        udf.name,
                        arity_text(udf.min_args, udf.max_args),
                        args.len()
                    ),
                ));
            }
            return Ok(Expr::primary(Ty::Unknown, at));
        }
        // Names in the IVOA ivo_ namespace are user-defined functions by
        // convention; the suite accepts undeclared ones (ivo_foo, ivo_getstring).
        let ivo_prefixed = name.len() > 4
            && name
                .get(..4)
                .is_some_and(|p| p.eq_ignore_ascii_case("ivo_"));
        if ivo_prefixed {
            return Ok(Expr::primary(Ty::Unknown, at));
        }
        Err(self.error_at(
            at,
            format!(
                "unknown function '{name}': it is neither an ADQL function nor a \
                 user-defined function of this service"
            ),
        ))
    }

    fn check_plain_args(&self, at: usize, sig: &FunctionSig, args: &[Expr]) -> PResult<()> {
        let wants = match sig.args {
            ValueType::Numeric => "a number",
            ValueType::Text => "a string",
            ValueType::Point | ValueType::Shape | ValueType::Any => return Ok(()),
        };
        if let Some(bad) = args.iter().find(|a| !a.numeric_ok()) {
            return Err(self.error_at(
                bad.at,
                format!("{} expects {wants} here, not a geometry value", sig.name),
            ));
        }
        if sig.name == "IN_UNIT" && args.get(1).is_some_and(|a| a.lit != Lit::Str) {
            return Err(self.error_at(
                args.get(1).map_or(at, |a| a.at),
                "the unit argument of IN_UNIT must be a string literal, e.g. 'rad'",
            ));
        }
        Ok(())
    }

    /// Argument rules of the ADQL geometry functions (section 4.2 and the
    /// BNF), returning the result type.
    fn check_geometry(&self, at: usize, upper: &str, args: &[Expr]) -> PResult<Ty> {
        let num = |e: &Expr| e.numeric_ok();
        let all_num = |r: &[Expr]| r.iter().all(num);
        let pt = |e: &Expr| e.point_ok();
        let (ok, result, usage) = match upper {
            "POINT" => (
                with_coordsys(args, |r| r.len() == 2 && all_num(r)),
                Ty::Geo(Geo::Point),
                "POINT([coordsys,] ra, dec)",
            ),
            "CIRCLE" => (
                with_coordsys(args, |r| match r {
                    [_, _, _] => all_num(r),
                    [center, radius] => pt(center) && num(radius),
                    _ => false,
                }),
                Ty::Geo(Geo::Shape),
                "CIRCLE([coordsys,] ra, dec, radius) or CIRCLE([coordsys,] point, radius)",
            ),
            "BOX" => (
                with_coordsys(args, |r| match r {
                    [_, _, _, _] => all_num(r),
                    [center, w, h] => pt(center) && num(w) && num(h),
                    _ => false,
                }),
                Ty::Geo(Geo::Shape),
                "BOX([coordsys,] ra, dec, width, height) or BOX([coordsys,] point, width, height)",
            ),
            "POLYGON" => (
                with_coordsys(args, |r| {
                    (r.len() >= 6 && r.len() % 2 == 0 && all_num(r))
                        || (r.len() >= 3 && r.iter().all(pt))
                }),
                Ty::Geo(Geo::Shape),
                "POLYGON([coordsys,] ra1, dec1, ra2, dec2, ra3, dec3, ...) or \
                 POLYGON([coordsys,] point1, point2, point3, ...), with at least three vertices",
            ),
            "REGION" => (
                args.iter()
                    .all(|a| matches!(a.ty, Ty::Str | Ty::Unknown | Ty::Null)),
                Ty::Geo(Geo::Shape),
                "REGION(stc_s_string)",
            ),
            "CENTROID" => (
                args.iter().all(Expr::geometry_ok),
                Ty::Geo(Geo::Point),
                "CENTROID(geometry)",
            ),
            "AREA" => (
                args.iter().all(Expr::geometry_ok),
                Ty::Num,
                "AREA(geometry)",
            ),
            "COORDSYS" => (
                args.iter().all(Expr::geometry_ok),
                Ty::Str,
                "COORDSYS(geometry)",
            ),
            "CONTAINS" | "INTERSECTS" => (
                args.iter().all(Expr::geometry_ok),
                Ty::Num,
                if upper == "CONTAINS" {
                    "CONTAINS(geometry, geometry)"
                } else {
                    "INTERSECTS(geometry, geometry)"
                },
            ),
            "COORD1" | "COORD2" => (
                args.iter().all(pt),
                Ty::Num,
                if upper == "COORD1" {
                    "COORD1(point)"
                } else {
                    "COORD2(point)"
                },
            ),
            "DISTANCE" => (
                match args {
                    [a, b] => pt(a) && pt(b),
                    [_, _, _, _] => all_num(args),
                    _ => false,
                },
                Ty::Num,
                "DISTANCE(point, point) or DISTANCE(ra1, dec1, ra2, dec2)",
            ),
            _ => (true, Ty::Unknown, ""),
        };
        if ok {
            Ok(result)
        } else {
            Err(self.error_at(
                at,
                format!("invalid arguments for {upper}; expected {usage}"),
            ))
        }
    }
}
