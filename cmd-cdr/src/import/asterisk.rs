//! `cdr-pusher import asterisk-csv FILE`: every line of an Asterisk CSV file (cdr_csv's
//! Master.csv, a cdr_custom file, a rotated `Master.csv.1`) mapped with the same mapping as
//! `sources.asterisk_csv` (so a line gets the same callId whether it was followed live or
//! imported: a duplicate, pushed once) and posted as canonical CDRs to `POST /v1/cdrs`, 500 a
//! request. A line that cannot be mapped or is not a valid CDR is named on stderr with its
//! reason and counted; the rest go on.

use std::path::Path;

use anyhow::Context as _;
use push_core::{
    config::AsteriskCsvSettings,
    schema,
    sources::{
        asterisk_csv::{columns_from_flag, lines, Mapping},
        feed,
    },
    Service,
};
use serde_json::Value;

use super::{Counts, Poster};

/// CDRs per request.
const BATCH: usize = 500;

/// Maps and posts every line of `file`.
pub async fn import(
    poster: &Poster,
    file: &Path,
    columns: &str,
    timezone: &str,
    service_type: u16,
) -> anyhow::Result<Counts> {
    let settings = AsteriskCsvSettings {
        path: file.to_path_buf(),
        columns: columns_from_flag(columns),
        timezone: timezone.to_string(),
        service_type,
        account_id: None,
    };
    let mapping = Mapping::new(&settings).map_err(|e| anyhow::anyhow!("--timezone: {e}"))?;
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let mut counts = Counts::default();
    let mut batch = Vec::new();
    for (index, line) in lines(&bytes, true).iter().enumerate() {
        if line.text.trim().is_empty() {
            continue;
        }
        counts.read += 1;
        match valid_cdrs(&mapping, &line.text) {
            Ok(mut cdrs) => batch.append(&mut cdrs),
            Err(reason) => {
                eprintln!("{}:{}: {reason}", file.display(), index + 1);
                counts.rejected += 1;
            }
        }
        if batch.len() >= BATCH {
            post(poster, std::mem::take(&mut batch), &mut counts).await?;
        }
    }
    if !batch.is_empty() {
        post(poster, batch, &mut counts).await?;
    }
    Ok(counts)
}

/// The line's CDRs, validated as the pusher will (so one bad line does not sink a request).
fn valid_cdrs(mapping: &Mapping, line: &str) -> Result<Vec<Value>, String> {
    let cdrs = mapping.map(line).cdrs?;
    schema::validate_body(Service::Cdr, &Value::Array(cdrs.clone())).map_err(|errors| feed::reason(&errors))?;
    Ok(cdrs)
}

/// Posts one array; counts what was stored and what had been before.
async fn post(poster: &Poster, cdrs: Vec<Value>, counts: &mut Counts) -> anyhow::Result<()> {
    let body = serde_json::to_vec(&Value::Array(cdrs))?;
    let (status, answer) = poster.post("/v1/cdrs", "application/json", body).await?;
    anyhow::ensure!(status == 202, "POST /v1/cdrs answered {status}: {answer}");
    let accepted = answer["accepted"].as_array().context("202 without `accepted`")?;
    let duplicates = accepted.iter().filter(|a| a["duplicate"] == true).count() as u64;
    counts.duplicates += duplicates;
    counts.accepted += accepted.len() as u64 - duplicates;
    Ok(())
}
