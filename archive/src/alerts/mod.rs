//! Alerts (DMS-REQ-0274, 0094): the Avro codec (`avro.rs`), Rubin's alert packet schema and
//! the assembly of alerts from encoded rows (`packet.rs`), image cutouts as in-memory FITS
//! (`cutout.rs`), their diaSource and diaObject records read back into Arrow tables
//! (`decode.rs`), and the alert archive with the delivery cursors of the distribution
//! sinks (`store.rs`).
pub mod avro;
pub mod cutout;
pub mod decode;
pub mod packet;
pub mod store;

pub use packet::{AlertParts, AlertSchema, AlertTable, confluent_frame};
pub use store::{
    AlertArchive, AlertArchiveError, AlertQuery, AlertRef, Host, NewAlert, StoredFilter,
};
