"""Data a bundle is made of: the catalog (ids, titles, metadata, thumbnails), safe image decoding,
and the bundle folder itself (manifest, checksums, Hub pull and push)."""
