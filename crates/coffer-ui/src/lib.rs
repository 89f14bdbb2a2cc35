//! Coffer's dashboard (`/ui`): static assets embedded in the binary.
//!
//! The dashboard is plain HTML, CSS and JavaScript modules under `assets/` (no build step,
//! no Node.js): the browser loads them from `/ui/...` and calls the `/v1` API with the key
//! the user signs in with. `build.rs` embeds each file with its gzip form and an ETag; the
//! HTTP layer (`coffer-api`) serves them with [`HEADERS`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// Its name under `/ui/`.
    pub name: &'static str,
    /// Its `Content-Type`.
    pub media_type: &'static str,
    /// Its `ETag` (quoted), a digest of [`Asset::body`].
    pub etag: &'static str,
    /// The `ETag` of its gzip form (another representation, so another tag).
    pub etag_gzip: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
    /// Its bytes, gzipped.
    pub gzip: &'static [u8],
}

/// Every asset, sorted by name.
pub static ASSETS: &[Asset] = include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// The page `/ui` answers with.
pub const INDEX: &str = "index.html";

/// The asset named `name`, if there is one.
pub fn asset(name: &str) -> Option<&'static Asset> {
    ASSETS
        .binary_search_by(|a| a.name.cmp(name))
        .ok()
        .map(|i| &ASSETS[i])
}

/// The Content-Security-Policy of every dashboard response: scripts, styles, images and API
/// calls from this origin only; no inline script or style, no `eval`, no frames, no forms
/// posted anywhere, no plugins; and no string may reach an HTML or script sink at all
/// (Trusted Types with no policy: the dashboard never needs one).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; font-src 'self'; \
     manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; \
     require-trusted-types-for 'script'; trusted-types 'none'";

/// The headers every dashboard response carries besides its type and caching.
pub const HEADERS: [(&str, &str); 6] = [
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_and_its_scripts_are_embedded() {
        let index = asset(INDEX).expect("index.html");
        assert!(index.media_type.starts_with("text/html"));
        assert!(asset("app.js").is_some());
        assert!(asset("nothing.js").is_none());
        assert!(ASSETS.windows(2).all(|w| w[0].name < w[1].name));
    }

    /// The assets never build markup from strings (every user-provided string is rendered
    /// as text) and never evaluate strings as code, so the CSP's refusals are never needed.
    #[test]
    fn no_asset_builds_markup_or_code_from_strings() {
        let banned = [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            "setTimeout(\"",
            "setTimeout('",
            "localStorage",
            "document.cookie",
            "javascript:",
        ];
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let text = std::str::from_utf8(a.body).expect("UTF-8");
            for b in banned {
                assert!(!text.contains(b), "{} uses {b}", a.name);
            }
        }
    }

    /// No inline script or style in the page: the CSP would refuse it.
    #[test]
    fn the_index_has_no_inline_script_or_style() {
        let text = std::str::from_utf8(asset(INDEX).unwrap().body).unwrap();
        assert!(!text.contains("<style"), "inline style");
        assert!(!text.contains(" style="), "inline style attribute");
        assert!(!text.contains(" on"), "inline event handler");
        for script in text.split("<script").skip(1) {
            let head = script.split('>').next().unwrap_or("");
            assert!(head.contains("src="), "inline script");
        }
    }

    /// Every asset gzipped stays under the budget (500 KB in all).
    #[test]
    fn the_assets_fit_the_budget() {
        let total: usize = ASSETS.iter().map(|a| a.gzip.len()).sum();
        println!(
            "dashboard assets: {} files, {} bytes, {} gzipped",
            ASSETS.len(),
            ASSETS.iter().map(|a| a.body.len()).sum::<usize>(),
            total
        );
        assert!(total < 500_000, "{total} bytes gzipped");
    }
}
