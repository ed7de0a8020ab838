//! ADQL 2.1 for Aster: a strict validator ([`validate`]), the translation of queries into
//! statements DataFusion plans ([`translate`]), the scalar functions behind ADQL geometry,
//! `ivo_*` and derived quantities ([`udf`]), spherical geometry ([`geometry`]) and the
//! recognition of sky regions in filters for partition pruning ([`region`]), and the
//! optimizer rule that turns positional crossmatch joins into hash joins ([`crossmatch`]).
pub mod crossmatch;
pub mod geometry;
pub mod region;
pub mod translate;
pub mod udf;
pub mod validate;
