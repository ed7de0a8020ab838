//! Fuzzes the path every TAP query takes from text to an executable plan: the strict ADQL
//! validator, the translation onto DataFusion, logical planning and optimisation (with the
//! crossmatch rule) and physical planning, over the built-in `dp` and `ap` schemas and
//! TAP_SCHEMA. Errors are fine answers; a panic, abort or hang is a bug.
#![no_main]

use std::sync::OnceLock;

use aster_archive::catalog::CatalogStore;
use aster_archive::query::QueryEngine;
use libfuzzer_sys::fuzz_target;

struct Harness {
    runtime: tokio::runtime::Runtime,
    engine: QueryEngine,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        // libfuzzer-sys aborts on every panic, even one the code under test catches (the
        // catalog's guard around cdshealpix's assertions on degenerate polygons). Report
        // panics but let them unwind: an uncaught one still reaches libfuzzer-sys, which
        // aborts, so it is still found.
        std::panic::set_hook(Box::new(|info| eprintln!("{info}")));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let dir = std::env::temp_dir().join(format!("aster-fuzz-{}", std::process::id()));
        let engine = runtime.block_on(async {
            let store = CatalogStore::open(&dir.display().to_string()).expect("catalog store");
            for schema in aster_archive::schema::builtin_schemas() {
                for table in &schema.tables {
                    store
                        .create_table(&schema.name, table, 1_000_000)
                        .await
                        .expect("empty table");
                }
            }
            QueryEngine::new(store)
        });
        Harness { runtime, engine }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(adql) = std::str::from_utf8(data) else {
        return;
    };
    let h = harness();
    h.runtime.block_on(async {
        if let Ok((ctx, plan)) = h.engine.plan(adql, Vec::new()).await {
            let _ = ctx.state().create_physical_plan(&plan).await;
        }
    });
});
