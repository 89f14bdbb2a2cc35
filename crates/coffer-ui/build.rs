//! Embeds every file of `assets/` (one flat directory): its bytes, its gzip form, its media
//! type and an ETag, written to `$OUT_DIR/assets.rs` as one sorted table.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    println!("cargo:rerun-if-changed={}", dir.display());
    let out = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).to_path_buf();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("assets/")
        .map(|e| {
            e.expect("an assets/ entry")
                .file_name()
                .into_string()
                .expect("a UTF-8 name")
        })
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    let mut table = String::from("&[\n");
    for name in &names {
        let path = dir.join(name);
        println!("cargo:rerun-if-changed={}", path.display());
        assert!(path.is_file(), "assets/ is flat: {name} is not a file");
        let bytes = std::fs::read(&path).expect("an asset");
        let media = media_type(name);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&bytes).expect("gzip");
        let gz = gz.finish().expect("gzip");
        let gz_path = out.join(format!("{name}.gz"));
        std::fs::write(&gz_path, &gz).expect("write the gzip form");
        let digest = <sha2::Sha256 as sha2::Digest>::digest(&bytes);
        let etag: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        writeln!(
            table,
            "    Asset {{ name: {name:?}, media_type: {media:?}, etag: \"\\\"{etag}\\\"\", \
             etag_gzip: \"\\\"{etag}-gz\\\"\", body: include_bytes!({raw:?}), \
             gzip: include_bytes!({gz:?}) }},",
            raw = path.display().to_string(),
            gz = gz_path.display().to_string(),
        )
        .expect("write to a String");
    }
    table.push(']');
    std::fs::write(out.join("assets.rs"), table).expect("write assets.rs");
}

/// The media type by extension; an asset of another kind fails the build.
fn media_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        _ => panic!("assets/{name}: no media type for this extension"),
    }
}
