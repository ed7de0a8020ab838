//! VOSI capabilities and availability of the image services, which clients (pyvo's
//! SIA2Service) read to find the endpoints.
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use super::{ImageServices, xml_response};
use crate::xml::escape;

fn capabilities(base: &str, service: &str, own: &[(&str, &str)]) -> String {
    let mut x = String::from(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<vosi:capabilities xmlns:vosi="http://www.ivoa.net/xml/VOSICapabilities/v1.0" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:vs="http://www.ivoa.net/xml/VODataService/v1.1">
"#,
    );
    let mut entries = vec![
        ("ivo://ivoa.net/std/VOSI#capabilities", "capabilities"),
        ("ivo://ivoa.net/std/VOSI#availability", "availability"),
    ];
    entries.extend_from_slice(own);
    for (std, path) in entries {
        x.push_str(&format!(
            "  <capability standardID=\"{std}\">\n    <interface xsi:type=\"vs:ParamHTTP\" role=\"std\">\n      <accessURL use=\"full\">{}</accessURL>\n    </interface>\n  </capability>\n",
            escape(&format!("{base}/{service}/{path}"))
        ));
    }
    x.push_str("</vosi:capabilities>\n");
    x
}

pub(super) async fn sia_capabilities(State(s): State<ImageServices>, h: HeaderMap) -> Response {
    xml_response(
        "text/xml",
        capabilities(
            &s.base_url(&h),
            "sia",
            &[(super::sia::STANDARD_ID, "query")],
        ),
    )
}

pub(super) async fn datalink_capabilities(
    State(s): State<ImageServices>,
    h: HeaderMap,
) -> Response {
    xml_response(
        "text/xml",
        capabilities(
            &s.base_url(&h),
            "datalink",
            &[(super::datalink::STANDARD_ID, "links")],
        ),
    )
}

pub(super) async fn soda_capabilities(State(s): State<ImageServices>, h: HeaderMap) -> Response {
    xml_response(
        "text/xml",
        capabilities(
            &s.base_url(&h),
            "soda",
            &[
                ("ivo://ivoa.net/std/SODA#sync-1.0", "sync"),
                ("ivo://ivoa.net/std/SODA#async-1.0", "async"),
            ],
        ),
    )
}

pub(super) async fn availability(State(s): State<ImageServices>) -> Response {
    let up = s.blocking(|r| r.collections().is_ok()).await;
    xml_response(
        "text/xml",
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<vosi:availability xmlns:vosi=\"http://www.ivoa.net/xml/VOSIAvailability/v1.0\">\n  <vosi:available>{up}</vosi:available>\n{}</vosi:availability>\n",
            if up {
                ""
            } else {
                "  <vosi:note>the dataset registry cannot be read</vosi:note>\n"
            }
        ),
    )
}
