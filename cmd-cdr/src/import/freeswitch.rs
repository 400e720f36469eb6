//! `cdr-pusher import freeswitch DIR`: replays a mod_json_cdr `err-log-dir` spool. After its
//! last failed attempt mod_json_cdr writes the leg's CDR there as `<uuid>.cdr.json`
//! (`a_<uuid>.cdr.json` with `prefix-a-leg`), holding what it would have posted: the JSON, or
//! with `encode` on the percent-encoded or base64 text without `cdr=` (`backup_cdr` in
//! mod_json_cdr.c), and a newline. Each file is posted to `POST /v1/sources/freeswitch` as
//! mod_json_cdr posts it, so a file already stored is a duplicate; with `rotate` the spool
//! has dated subdirectories, which are read too. Files are left in place.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::{Counts, Poster};

const SUFFIX: &str = ".cdr.json";

/// Posts every CDR file of the spool `dir`.
pub async fn import(poster: &Poster, dir: &Path) -> anyhow::Result<Counts> {
    let mut counts = Counts::default();
    for file in spool_files(dir)? {
        counts.read += 1;
        let content = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        let (content_type, body) = as_posted(content);
        let path = format!("/v1/sources/freeswitch?uuid={}", leg_uuid(&file));
        let (status, answer) = poster.post(&path, content_type, body).await?;
        match status {
            200..=299 => match answer["accepted"][0]["duplicate"].as_bool() {
                Some(true) => counts.duplicates += 1,
                _ => counts.accepted += 1,
            },
            400 | 413 | 415 | 422 => {
                counts.rejected += 1;
                let reason = answer["message"].as_str().unwrap_or("no reason given");
                eprintln!("{}: refused ({status}): {reason}", file.display());
            }
            _ => anyhow::bail!("{}: cdr-pusher answered {status}: {answer}; stopped here", file.display()),
        }
    }
    Ok(counts)
}

/// The spool's `*.cdr.json` files, its subdirectories' included, in name order.
fn spool_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading the spool {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(SUFFIX)) {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// The leg's uuid from the file's name (`a_` prefix and suffix off), as mod_json_cdr's
/// `?uuid=`.
fn leg_uuid(file: &Path) -> String {
    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let name = name.strip_suffix(SUFFIX).unwrap_or(name);
    name.strip_prefix("a_").unwrap_or(name).to_string()
}

/// The request mod_json_cdr would have made of a spool file: JSON as it is, percent-encoded
/// or base64 text after `cdr=` with its `encode` setting's Content-Type.
fn as_posted(content: Vec<u8>) -> (&'static str, Vec<u8>) {
    let text = content.trim_ascii();
    match text.first() {
        Some(b'{') => ("application/json", text.to_vec()),
        Some(b'%') => ("application/x-www-form-urlencoded", [b"cdr=", text].concat()),
        _ => ("application/x-www-form-base64-encoded", [b"cdr=", text].concat()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spool_file_is_posted_as_mod_json_cdr_posts_it() {
        assert_eq!(as_posted(b"{\"a\":1}\n".to_vec()), ("application/json", b"{\"a\":1}".to_vec()));
        assert_eq!(as_posted(b"%7B%22a%22\n".to_vec()).1, b"cdr=%7B%22a%22");
        assert_eq!(as_posted(b"eyJh\n".to_vec()).0, "application/x-www-form-base64-encoded");
        assert_eq!(leg_uuid(Path::new("/s/a_5a3a.cdr.json")), "5a3a");
        assert_eq!(leg_uuid(Path::new("9c1a.cdr.json")), "9c1a");
    }
}
