//! TREC run and qrels files, read and written with trec_eval's conventions.
//!
//! - qrels: `qid iteration docno relevance`, whitespace-separated; relevance an integer
//!   (≥ 1 relevant, ≤ 0 judged non-relevant).
//! - run: `qid Q0 docno rank score tag`; the rank column is ignored (trec_eval re-sorts by
//!   score, then docno), the score is read as an `f64` and ranked as trec_eval 9.x and
//!   pytrec_eval rank it, as an `f32` (so scores equal in `f32` tie, and `-0` ties with `0`;
//!   trec_eval 10 compares doubles instead).
//!
//! A duplicate (qid, docno) in either file is an error, as in trec_eval.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use crate::data::{format_error, read_text};
use crate::error::{Error, Result};

/// Judgements: qid → docno → relevance level.
pub type Qrels = BTreeMap<String, BTreeMap<String, i64>>;

/// A run: qid → retrieved (docno, score), in file order.
pub type Run = BTreeMap<String, Vec<(String, f64)>>;

/// A line's fields, split at ASCII whitespace only, as trec_eval splits them: an id may
/// hold any other character (a no-break space in a docno is part of it).
fn fields(line: &str) -> Vec<&str> {
    line.split_ascii_whitespace().collect()
}

/// Read a qrels file.
pub fn read_qrels(path: &Path) -> Result<Qrels> {
    let text = read_text(path)?;
    parse_qrels(path, &text)
}

pub fn parse_qrels(path: &Path, text: &str) -> Result<Qrels> {
    let mut out = Qrels::new();
    for (i, line) in text.lines().enumerate() {
        let f = fields(line);
        if f.is_empty() {
            continue;
        }
        if f.len() != 4 {
            return Err(format_error(
                path,
                format!(
                    "line {}: expected 4 fields (qid iteration docno relevance), found {}",
                    i + 1,
                    f.len()
                ),
            ));
        }
        let rel: i64 = f[3].parse().map_err(|_| {
            format_error(
                path,
                format!(
                    "line {}: expected an integer relevance{}, found {:?}",
                    i + 1,
                    // An integer, but past an i64's range.
                    if f[3]
                        .trim_start_matches(['-', '+'])
                        .bytes()
                        .all(|c| c.is_ascii_digit())
                    {
                        format!(" of at most {} in size", i64::MAX)
                    } else {
                        String::new()
                    },
                    f[3]
                ),
            )
        })?;
        let q = out.entry(f[0].to_string()).or_default();
        if q.insert(f[2].to_string(), rel).is_some() {
            return Err(format_error(
                path,
                format!(
                    "line {}: document {} is judged twice for query {}",
                    i + 1,
                    f[2],
                    f[0]
                ),
            ));
        }
    }
    Ok(out)
}

/// Read a run file.
pub fn read_run(path: &Path) -> Result<Run> {
    let text = read_text(path)?;
    parse_run(path, &text)
}

pub fn parse_run(path: &Path, text: &str) -> Result<Run> {
    let mut out = Run::new();
    // Borrowed from `text`: the check copies no id (a 2M-line run took 630 MB with copies).
    let mut seen: std::collections::HashSet<(&str, &str)> = Default::default();
    for (i, line) in text.lines().enumerate() {
        let f = fields(line);
        if f.is_empty() {
            continue;
        }
        // Columns after the tag are ignored, as trec_eval ignores them.
        if f.len() < 6 {
            return Err(format_error(
                path,
                format!(
                    "line {}: expected 6 fields (qid Q0 docno rank score tag), found {}",
                    i + 1,
                    f.len()
                ),
            ));
        }
        // ±inf is a score (trec_eval reads one, and a run may overflow f64); NaN has no rank.
        let score: f64 = f[4]
            .parse()
            .ok()
            .filter(|s: &f64| !s.is_nan())
            .ok_or_else(|| {
                format_error(
                    path,
                    format!(
                        "line {}: expected a score (a number, ±inf allowed), found {:?}",
                        i + 1,
                        f[4]
                    ),
                )
            })?;
        if !seen.insert((f[0], f[2])) {
            return Err(format_error(
                path,
                format!(
                    "line {}: document {} is retrieved twice for query {}",
                    i + 1,
                    f[2],
                    f[0]
                ),
            ));
        }
        let doc = (f[2].to_string(), score);
        match out.get_mut(f[0]) {
            Some(docs) => docs.push(doc),
            None => {
                out.insert(f[0].to_string(), vec![doc]);
            }
        }
    }
    Ok(out)
}

/// A run tag TREC files can hold: not empty, no whitespace (checked before a search, not
/// after it).
pub fn check_run_tag(tag: &str) -> Result<()> {
    check_id("run tag", tag)
}

/// A run tag made from a model's name: the name with each run of whitespace replaced by
/// `_` (a model directory's path may hold spaces), `optical` if nothing is left.
pub fn tag_from_name(name: &str) -> String {
    let tag = name.split_ascii_whitespace().collect::<Vec<_>>().join("_");
    if tag.is_empty() {
        "optical".into()
    } else {
        tag
    }
}

fn check_id(kind: &str, id: &str) -> Result<()> {
    if id.is_empty() || id.contains(|c: char| c.is_ascii_whitespace()) {
        return Err(Error::value(
            format!("TREC {kind}"),
            format!("expected an id without whitespace, found {id:?}"),
        ));
    }
    Ok(())
}

/// Write qrels lines `qid 0 docno rel`.
pub fn write_qrels<'a>(
    path: &Path,
    judgements: impl IntoIterator<Item = (&'a str, &'a str, i64)>,
) -> Result<()> {
    let mut w = create(path)?;
    for (q, d, rel) in judgements {
        check_id("qid", q)?;
        check_id("docno", d)?;
        writeln!(w, "{q} 0 {d} {rel}").map_err(|e| Error::io(path, "write", e))?;
    }
    w.flush().map_err(|e| Error::io(path, "write", e))
}

/// Streams run lines `qid Q0 docno rank score tag`; ranks start at 1 per query, in the
/// order given (callers pass each query's documents best first).
pub struct RunWriter {
    path: std::path::PathBuf,
    w: std::io::BufWriter<std::fs::File>,
    tag: String,
}

impl RunWriter {
    pub fn create(path: &Path, tag: &str) -> Result<RunWriter> {
        check_id("run tag", tag)?;
        Ok(RunWriter {
            path: path.to_path_buf(),
            w: create(path)?,
            tag: tag.to_string(),
        })
    }

    /// Write one query's ranked documents. Scores are printed in the shortest form that
    /// reads back to the same `f32`, so equal scores stay tied for trec_eval.
    pub fn query<'a>(
        &mut self,
        qid: &str,
        ranked: impl IntoIterator<Item = (&'a str, f32)>,
    ) -> Result<()> {
        check_id("qid", qid)?;
        for (rank, (doc, score)) in ranked.into_iter().enumerate() {
            check_id("docno", doc)?;
            writeln!(self.w, "{qid} Q0 {doc} {} {score} {}", rank + 1, self.tag)
                .map_err(|e| Error::io(&self.path, "write", e))?;
        }
        Ok(())
    }

    pub fn finish(mut self) -> Result<()> {
        self.w
            .flush()
            .map_err(|e| Error::io(&self.path, "write", e))
    }
}

fn create(path: &Path) -> Result<std::io::BufWriter<std::fs::File>> {
    let f = std::fs::File::create(path).map_err(|e| Error::io(path, "create", e))?;
    Ok(std::io::BufWriter::new(f))
}

#[cfg(test)]
mod tests {
    use super::{check_run_tag, tag_from_name};

    /// A model directory's path with spaces makes a tag `optical eval` can write (it has no
    /// tag option, so a name refused after the first task's encoding was a dead end).
    #[test]
    fn a_model_name_with_spaces_makes_a_valid_tag() {
        for (name, tag) in [
            ("models/my model", "models/my_model"),
            ("e5-small", "e5-small"),
            (" a \t b ", "a_b"),
            ("   ", "optical"),
        ] {
            assert_eq!(tag_from_name(name), tag);
            check_run_tag(&tag_from_name(name)).unwrap();
        }
    }
}
