//! Small request bodies that clients send either as JSON or as an HTML form (`curl -d`, a
//! browser's form): one extractor for both, by the request's Content-Type, refusing a body
//! that does not decode (or names a field the type does not have) with a 400 saying why.
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

/// The most such a body may hold.
const LIMIT: usize = 64 * 1024;

/// A body decoded as JSON when its Content-Type says so, else as a form.
pub struct JsonOrForm<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonOrForm<T> {
    type Rejection = Response;

    async fn from_request(req: Request, _: &S) -> Result<Self, Response> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let body = axum::body::to_bytes(req.into_body(), LIMIT)
            .await
            .map_err(|_| {
                let message = format!("the request body is over {} KiB", LIMIT / 1024);
                (StatusCode::PAYLOAD_TOO_LARGE, message).into_response()
            })?;
        let value = if is_json {
            serde_json::from_slice(&body).map_err(|e| e.to_string())
        } else {
            serde_urlencoded::from_bytes(&body).map_err(|e| e.to_string())
        };
        value
            .map(JsonOrForm)
            .map_err(|e| (StatusCode::BAD_REQUEST, format!("the request: {e}")).into_response())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        name: Option<String>,
        days: Option<i64>,
    }

    async fn extract(content_type: &str, body: &str) -> Result<Sample, (StatusCode, String)> {
        let req = Request::builder()
            .method("POST")
            .header(header::CONTENT_TYPE, content_type)
            .body(axum::body::Body::from(body.to_string()))
            .unwrap();
        match JsonOrForm::<Sample>::from_request(req, &()).await {
            Ok(JsonOrForm(s)) => Ok(s),
            Err(r) => {
                let status = r.status();
                let bytes = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
                Err((status, String::from_utf8_lossy(&bytes).into_owned()))
            }
        }
    }

    #[tokio::test]
    async fn json_and_forms_decode_alike_and_errors_say_why() {
        let want = Sample {
            name: Some("a b".into()),
            days: Some(3),
        };
        let json = extract("application/json", r#"{"name": "a b", "days": 3}"#).await;
        assert_eq!(json.unwrap(), want);
        let form = extract("application/x-www-form-urlencoded", "name=a+b&days=3").await;
        assert_eq!(form.unwrap(), want);
        let (status, why) = extract("application/x-www-form-urlencoded", "days=three")
            .await
            .unwrap_err();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(why.contains("the request"), "{why}");
        let (status, why) = extract("application/json", r#"{"colour": 1}"#)
            .await
            .unwrap_err();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(why.contains("colour"), "{why}");
        let big = format!("name={}", "x".repeat(LIMIT));
        let (status, _) = extract("application/x-www-form-urlencoded", &big)
            .await
            .unwrap_err();
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
