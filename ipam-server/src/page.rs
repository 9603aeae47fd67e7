//! The usage page at `/`: pools with utilization bars, a pool's blocks
//! coloured by owning node and fill, and a block's addresses with who holds
//! them.
//!
//! The page is three static files compiled into the binary (`assets/`): no
//! build step, nothing fetched from elsewhere. They carry no data; the
//! page's script reads `/v1/usage` and `/v1/blocks` like any other client,
//! so these handlers must never embed figures or touch the engine.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// One embedded file and how it is served.
struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: &'static str,
}

/// FNV-1a, 64 bits: `const`, so each asset's ETag is computed by the
/// compiler from the bytes it embeds.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

/// `"<16 hex digits>"`: a quoted entity tag, as HTTP spells it.
const fn etag_of(body: &str) -> [u8; 18] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let hash = fnv1a(body.as_bytes());
    let mut tag = [b'"'; 18];
    let mut i = 0;
    while i < 16 {
        tag[1 + i] = HEX[((hash >> (60 - 4 * i)) & 0xf) as usize];
        i += 1;
    }
    tag
}

macro_rules! asset {
    ($file:literal, $content_type:literal) => {{
        const BODY: &str = include_str!(concat!("../assets/", $file));
        const TAG: [u8; 18] = etag_of(BODY);
        Asset {
            body: BODY,
            content_type: $content_type,
            etag: match std::str::from_utf8(&TAG) {
                Ok(tag) => tag,
                Err(_) => panic!("an ETag is ASCII"),
            },
        }
    }};
}

const INDEX: Asset = asset!("index.html", "text/html; charset=utf-8");
const APP_JS: Asset = asset!("app.js", "text/javascript; charset=utf-8");
const STYLE: Asset = asset!("style.css", "text/css; charset=utf-8");

/// The page may load only its own script and stylesheet and talk only to
/// this server: API data (handles, pod names) is user data, and should an
/// escaping bug ever let some of it in as markup, it still cannot run.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

impl Asset {
    fn respond(&self, request: &HeaderMap) -> Response {
        // The files change only with the binary, yet their names do not, so
        // a browser may keep them but must ask each time (`no-cache`); the
        // ETag turns that question into a 304 until the server is upgraded.
        let unchanged = request
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|tag| {
                let tag = tag.trim();
                tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == self.etag
            });
        let headers = [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(self.content_type),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::ETAG, HeaderValue::from_static(self.etag)),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
        ];
        if unchanged {
            (StatusCode::NOT_MODIFIED, headers).into_response()
        } else {
            (headers, self.body).into_response()
        }
    }
}

/// `GET /`: the page.
pub async fn index(request: HeaderMap) -> Response {
    INDEX.respond(&request)
}

/// `GET /app.js`: the page's script.
pub async fn app_js(request: HeaderMap) -> Response {
    APP_JS.respond(&request)
}

/// `GET /style.css`: the page's stylesheet.
pub async fn style_css(request: HeaderMap) -> Response {
    STYLE.respond(&request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(response: &Response, name: header::HeaderName) -> &str {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn each_asset_is_served_with_its_content_type() {
        for (response, content_type) in [
            (index(HeaderMap::new()).await, "text/html; charset=utf-8"),
            (
                app_js(HeaderMap::new()).await,
                "text/javascript; charset=utf-8",
            ),
            (style_css(HeaderMap::new()).await, "text/css; charset=utf-8"),
        ] {
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(header(&response, header::CONTENT_TYPE), content_type);
            assert_eq!(header(&response, header::CACHE_CONTROL), "no-cache");
            assert_eq!(header(&response, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
        }
    }

    #[tokio::test]
    async fn a_matching_etag_is_answered_with_not_modified() {
        let first = app_js(HeaderMap::new()).await;
        let etag = header(&first, header::ETAG).to_string();
        assert_eq!(etag.len(), 18, "a quoted 64-bit hash: {etag}");
        let mut request = HeaderMap::new();
        request.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"0000000000000000\", W/{etag}")).unwrap(),
        );
        let again = app_js(request).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(header(&again, header::ETAG), etag);
    }

    #[test]
    fn the_assets_have_different_etags() {
        assert_ne!(INDEX.etag, APP_JS.etag);
        assert_ne!(APP_JS.etag, STYLE.etag);
    }
}
