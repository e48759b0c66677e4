//! LAReQA: XQuAD-R and MLQA-R as language-agnostic answer retrieval (Roy et al., 2020).
//!
//! Each language file is SQuAD v1.1 JSON with, per paragraph, `sentences` and
//! `sentence_breaks` (`[start, end)` character spans into `context`). The construction
//! follows the paper exactly:
//!
//! - the candidate pool is every sentence of every paragraph of every language, one
//!   candidate per entry of `sentences`, without de-duplication: XQuAD-R has only 13,000
//!   distinct strings among its 13,014 candidates (and MLQA-R 20,496 among 20,534), and
//!   the paper's counts — and the per-language table released with the data — count
//!   every occurrence;
//! - each question of each language is a query (13,090 for XQuAD-R, 4,199 for MLQA-R);
//! - the relevant candidates of a query are, for every language version of the same
//!   question id, the sentence whose span contains that version's `answer_start`
//!   (11 per query for XQuAD-R; 2–4 for MLQA-R, whose questions exist in 2–4 languages).
//!
//! Candidates keep the index of their paragraph context so an encoder can use it.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use super::{format_error, read_text, DatasetName, RetrievalTask, Text};
use crate::error::Result;
use crate::io::json_kind;

/// XQuAD-R's languages, in the order of the released files.
pub const XQUAD_R_LANGUAGES: [&str; 11] = [
    "ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh",
];
/// MLQA-R's languages.
pub const MLQA_R_LANGUAGES: [&str; 7] = ["ar", "de", "en", "es", "hi", "vi", "zh"];

/// One candidate sentence of the pool.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub text: Text,
    /// Index into [`Lareqa::contexts`] of the paragraph the sentence comes from.
    pub context: usize,
}

/// One question in one language.
#[derive(Clone, Debug)]
pub struct Query {
    pub text: Text,
    /// The question id shared by all language versions.
    pub question_id: String,
    /// Candidates containing the answer, one per language version of the question.
    pub relevant: Vec<usize>,
}

/// A LAReQA dataset: one multilingual pool and the queries of every language.
#[derive(Clone, Debug)]
pub struct Lareqa {
    pub name: String,
    pub languages: Vec<String>,
    pub candidates: Vec<Candidate>,
    pub contexts: Vec<String>,
    pub queries: Vec<Query>,
}

/// Per-language counts for `optical data stats`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LanguageStats {
    pub language: String,
    pub queries: usize,
    pub candidates: usize,
}

impl Lareqa {
    /// Load `<data_dir>/lareqa/<xquad-r|mlqa-r>/<lang>.json` for the given languages (all
    /// of the dataset's languages when `languages` is empty).
    pub fn load(data_dir: &Path, dataset: DatasetName, languages: &[String]) -> Result<Lareqa> {
        let all: Vec<String> = Lareqa::languages(dataset)?
            .iter()
            .map(|s| s.to_string())
            .collect();
        let languages = super::select_languages(&all, languages)?;
        let dir = data_dir.join(dataset.subdir());
        if !dir.exists() {
            return Err(super::missing_dataset_dir(&dir));
        }
        let missing = Lareqa::missing(data_dir, dataset, &languages);
        if !missing.is_empty() {
            let present: Vec<&String> = all
                .iter()
                .filter(|l| dir.join(format!("{l}.json")).is_file())
                .collect();
            return Err(format_error(
                &dir,
                format!(
                    "expected <language>.json for every language asked for, found no {}; \
                     the languages present: {} (--languages selects among them)",
                    missing
                        .iter()
                        .map(|l| format!("{l}.json"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    if present.is_empty() {
                        "none".to_string()
                    } else {
                        present
                            .iter()
                            .map(|l| l.as_str())
                            .collect::<Vec<_>>()
                            .join(",")
                    }
                ),
            ));
        }
        Lareqa::load_files(dataset.name(), &dir, &languages)
    }

    /// The languages of a LAReQA dataset.
    pub fn languages(dataset: DatasetName) -> Result<&'static [&'static str]> {
        match dataset {
            DatasetName::XquadR => Ok(&XQUAD_R_LANGUAGES),
            DatasetName::MlqaR => Ok(&MLQA_R_LANGUAGES),
            other => Err(crate::Error::parameter(
                "dataset",
                "a LAReQA dataset (xquad-r or mlqa-r)",
                other,
            )),
        }
    }

    /// Those of `languages` whose `<lang>.json` is not in the dataset's directory.
    pub fn missing(data_dir: &Path, dataset: DatasetName, languages: &[String]) -> Vec<String> {
        let dir = data_dir.join(dataset.subdir());
        languages
            .iter()
            .filter(|l| !dir.join(format!("{l}.json")).is_file())
            .cloned()
            .collect()
    }

    /// Load `<dir>/<lang>.json` for each language and build the pool.
    pub fn load_files(name: &str, dir: &Path, languages: &[String]) -> Result<Lareqa> {
        let mut out = Lareqa {
            name: name.to_string(),
            languages: languages.to_vec(),
            candidates: Vec::new(),
            contexts: Vec::new(),
            queries: Vec::new(),
        };
        // (question id) -> relevant candidate of each language version.
        let mut answers: HashMap<String, Vec<usize>> = HashMap::new();
        for lang in languages {
            let path = dir.join(format!("{lang}.json"));
            let text = read_text(&path)?;
            parse_language(&path, &text, lang, &mut out, &mut answers)?;
        }
        for q in &mut out.queries {
            q.relevant = answers[&q.question_id].clone();
        }
        Ok(out)
    }

    /// The retrieval task: every query against the whole pool.
    pub fn task(&self) -> RetrievalTask {
        RetrievalTask {
            name: self.name.clone(),
            queries: self.queries.iter().map(|q| q.text.clone()).collect(),
            candidates: self
                .candidates
                .iter()
                .map(|c| Text {
                    context: Some(self.contexts[c.context].clone()),
                    ..c.text.clone()
                })
                .collect(),
            relevant: self.queries.iter().map(|q| q.relevant.clone()).collect(),
            asymmetric: true,
        }
    }

    /// A deterministic subset with the pool restricted to it, for evaluations that cannot
    /// afford the whole dataset.
    ///
    /// The rule: order the distinct question ids by their hash ([`crate::rng::stable_hash`])
    /// and take the first `questions` as seeds; the paragraphs kept are those holding a
    /// relevant sentence of a seed (in any language); the pool is every sentence of the kept
    /// paragraphs, and the queries are every question (any language) whose relevant
    /// sentences all lie in kept paragraphs — the seeds and the other questions on the same
    /// paragraphs. So every kept query has all its relevant candidates in the pool, and the
    /// distractors are the other sentences of the same paragraphs in every language. With
    /// `questions` at least the number of question ids, the whole dataset is returned.
    pub fn subset(&self, questions: usize) -> Lareqa {
        let mut ids: Vec<&str> = self
            .queries
            .iter()
            .map(|q| q.question_id.as_str())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        if questions >= ids.len() {
            return self.clone();
        }
        ids.sort_by_key(|id| (crate::rng::stable_hash(id.as_bytes()), *id));
        let seeds: std::collections::HashSet<&str> = ids[..questions].iter().copied().collect();
        let mut kept_context = vec![false; self.contexts.len()];
        for q in self
            .queries
            .iter()
            .filter(|q| seeds.contains(q.question_id.as_str()))
        {
            for &c in &q.relevant {
                kept_context[self.candidates[c].context] = true;
            }
        }
        let mut new_context = vec![usize::MAX; self.contexts.len()];
        let mut contexts = Vec::new();
        for (i, &keep) in kept_context.iter().enumerate() {
            if keep {
                new_context[i] = contexts.len();
                contexts.push(self.contexts[i].clone());
            }
        }
        let mut new_candidate = vec![usize::MAX; self.candidates.len()];
        let mut candidates = Vec::new();
        for (i, c) in self.candidates.iter().enumerate() {
            if kept_context[c.context] {
                new_candidate[i] = candidates.len();
                candidates.push(Candidate {
                    text: c.text.clone(),
                    context: new_context[c.context],
                });
            }
        }
        let queries = self
            .queries
            .iter()
            .filter(|q| q.relevant.iter().all(|&c| new_candidate[c] != usize::MAX))
            .map(|q| Query {
                text: q.text.clone(),
                question_id: q.question_id.clone(),
                relevant: q.relevant.iter().map(|&c| new_candidate[c]).collect(),
            })
            .collect();
        Lareqa {
            name: self.name.clone(),
            languages: self.languages.clone(),
            candidates,
            contexts,
            queries,
        }
    }

    pub fn language_stats(&self) -> Vec<LanguageStats> {
        self.languages
            .iter()
            .map(|l| LanguageStats {
                language: l.clone(),
                queries: self
                    .queries
                    .iter()
                    .filter(|q| &q.text.language == l)
                    .count(),
                candidates: self
                    .candidates
                    .iter()
                    .filter(|c| &c.text.language == l)
                    .count(),
            })
            .collect()
    }
}

/// A JSON location for error messages, e.g. `data[3].paragraphs[0].qas[2]`.
fn at(parent: &str, field: &str, index: Option<usize>) -> String {
    let sep = if parent.is_empty() { "" } else { "." };
    match index {
        Some(i) => format!("{parent}{sep}{field}[{i}]"),
        None => format!("{parent}{sep}{field}"),
    }
}

fn field<'a>(path: &Path, v: &'a Value, loc: &str, name: &str) -> Result<&'a Value> {
    let loc = if loc.is_empty() { "the top level" } else { loc };
    match v {
        Value::Object(m) => m.get(name).ok_or_else(|| {
            format_error(
                path,
                format!("{loc}: expected a field `{name}`, found none"),
            )
        }),
        other => Err(format_error(
            path,
            format!("{loc}: expected an object, found {}", json_kind(other)),
        )),
    }
}

fn array<'a>(path: &Path, v: &'a Value, loc: &str, name: &str) -> Result<&'a Vec<Value>> {
    match field(path, v, loc, name)? {
        Value::Array(a) => Ok(a),
        other => Err(format_error(
            path,
            format!(
                "{}: expected a list, found {}",
                at(loc, name, None),
                json_kind(other)
            ),
        )),
    }
}

fn string<'a>(path: &Path, v: &'a Value, loc: &str) -> Result<&'a str> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(format_error(
            path,
            format!("{loc}: expected a string, found {}", json_kind(other)),
        )),
    }
}

fn uint(path: &Path, v: &Value, loc: &str) -> Result<usize> {
    v.as_u64().map(|u| u as usize).ok_or_else(|| {
        format_error(
            path,
            format!("{loc}: expected a non-negative integer, found {v}"),
        )
    })
}

fn parse_language(
    path: &Path,
    text: &str,
    lang: &str,
    out: &mut Lareqa,
    answers: &mut HashMap<String, Vec<usize>>,
) -> Result<()> {
    let root: Value = serde_json::from_str(text).map_err(|e| {
        format_error(
            path,
            format!(
                "invalid JSON at line {}, column {}: {e}",
                e.line(),
                e.column()
            ),
        )
    })?;
    let mut seen_ids: HashMap<String, String> = HashMap::new();
    let mut lang_candidates = 0usize;
    for (ai, article) in array(path, &root, "", "data")?.iter().enumerate() {
        let aloc = at("", "data", Some(ai));
        for (pi, para) in array(path, article, &aloc, "paragraphs")?
            .iter()
            .enumerate()
        {
            let ploc = at(&aloc, "paragraphs", Some(pi));
            let context = string(
                path,
                field(path, para, &ploc, "context")?,
                &at(&ploc, "context", None),
            )?;
            let sentences = array(path, para, &ploc, "sentences")?;
            let breaks = array(path, para, &ploc, "sentence_breaks")?;
            if sentences.len() != breaks.len() {
                return Err(format_error(
                    path,
                    format!(
                        "{ploc}: expected one sentence break per sentence, found {} sentences \
                         and {} breaks",
                        sentences.len(),
                        breaks.len()
                    ),
                ));
            }
            if sentences.is_empty() {
                return Err(format_error(
                    path,
                    format!("{ploc}: expected at least one sentence, found none"),
                ));
            }
            let context_len = context.chars().count();
            let mut spans = Vec::with_capacity(breaks.len());
            for (si, b) in breaks.iter().enumerate() {
                let bloc = at(&ploc, "sentence_breaks", Some(si));
                let pair = match b {
                    Value::Array(p) if p.len() == 2 => p,
                    other => {
                        return Err(format_error(
                            path,
                            format!("{bloc}: expected [start, end], found {other}"),
                        ))
                    }
                };
                let (s, e) = (uint(path, &pair[0], &bloc)?, uint(path, &pair[1], &bloc)?);
                if s > e || e > context_len {
                    return Err(format_error(
                        path,
                        format!(
                            "{bloc}: expected 0 <= start <= end <= {context_len} (the context \
                             length), found [{s}, {e}]"
                        ),
                    ));
                }
                // In order and apart: an answer's sentence is the span holding its start,
                // which overlapping spans would leave to whichever comes first.
                if let Some(&(_, prev_end)) = spans.last() {
                    if s < prev_end {
                        return Err(format_error(
                            path,
                            format!(
                                "{bloc}: expected a span starting at or after {prev_end} (the \
                                 previous one's end), found [{s}, {e}]"
                            ),
                        ));
                    }
                }
                spans.push((s, e));
            }
            let context_index = out.contexts.len();
            out.contexts.push(context.to_string());
            let first_candidate = out.candidates.len();
            for (si, s) in sentences.iter().enumerate() {
                let sloc = at(&ploc, "sentences", Some(si));
                let s = string(path, s, &sloc)?;
                if s.trim().is_empty() {
                    return Err(format_error(
                        path,
                        format!("{sloc}: expected a non-empty sentence, found an empty one"),
                    ));
                }
                out.candidates.push(Candidate {
                    text: Text {
                        id: format!("{lang}-{lang_candidates:05}"),
                        language: lang.to_string(),
                        text: s.to_string(),
                        context: None,
                    },
                    context: context_index,
                });
                lang_candidates += 1;
            }
            for (qi, qa) in array(path, para, &ploc, "qas")?.iter().enumerate() {
                let qloc = at(&ploc, "qas", Some(qi));
                let id = string(path, field(path, qa, &qloc, "id")?, &at(&qloc, "id", None))?;
                if id.is_empty() || id.contains(char::is_whitespace) {
                    return Err(format_error(
                        path,
                        format!("{qloc}: expected a question id without whitespace, found {id:?}"),
                    ));
                }
                let question = string(
                    path,
                    field(path, qa, &qloc, "question")?,
                    &at(&qloc, "question", None),
                )?;
                if question.trim().is_empty() {
                    return Err(format_error(
                        path,
                        format!("{qloc}: expected a non-empty question, found an empty one"),
                    ));
                }
                if let Some(prev) = seen_ids.insert(id.to_string(), qloc.clone()) {
                    return Err(format_error(
                        path,
                        format!("{qloc}: question id {id:?} already used at {prev}"),
                    ));
                }
                let answers_v = array(path, qa, &qloc, "answers")?;
                let first = answers_v.first().ok_or_else(|| {
                    format_error(
                        path,
                        format!("{qloc}: expected at least one answer, found none"),
                    )
                })?;
                let aloc = at(&qloc, "answers", Some(0));
                let start = uint(
                    path,
                    field(path, first, &aloc, "answer_start")?,
                    &at(&aloc, "answer_start", None),
                )?;
                // The answer's sentence: the span containing its first character.
                let si = spans
                    .iter()
                    .position(|&(s, e)| s <= start && start < e)
                    .ok_or_else(|| {
                        format_error(
                            path,
                            format!(
                                "{aloc}: answer_start {start} lies in no sentence (breaks {:?})",
                                spans
                            ),
                        )
                    })?;
                answers
                    .entry(id.to_string())
                    .or_default()
                    .push(first_candidate + si);
                out.queries.push(Query {
                    text: Text {
                        id: format!("{lang}-{id}"),
                        language: lang.to_string(),
                        text: question.to_string(),
                        context: None,
                    },
                    question_id: id.to_string(),
                    relevant: Vec::new(),
                });
            }
        }
    }
    if seen_ids.is_empty() {
        return Err(format_error(
            path,
            "data: expected at least one question, found none (an empty file or a truncated \
             download?)"
                .to_string(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two languages, 6 parallel paragraphs of 2 sentences, one question per paragraph
    /// whose answer is its paragraph's sentence 1 in both languages.
    fn toy() -> Lareqa {
        let mut l = Lareqa {
            name: "toy".into(),
            languages: vec!["en".into(), "de".into()],
            candidates: Vec::new(),
            contexts: Vec::new(),
            queries: Vec::new(),
        };
        let text = |id: String, lang: &str| Text {
            id,
            language: lang.into(),
            text: "x".into(),
            context: None,
        };
        for lang in ["en", "de"] {
            for p in 0..6 {
                l.contexts.push(format!("{lang} paragraph {p}"));
                for s in 0..2 {
                    l.candidates.push(Candidate {
                        text: text(format!("{lang}-{p}-{s}"), lang),
                        context: l.contexts.len() - 1,
                    });
                }
            }
        }
        for lang in ["en", "de"] {
            for p in 0..6 {
                l.queries.push(Query {
                    text: text(format!("{lang}-q{p}"), lang),
                    question_id: format!("q{p}"),
                    relevant: vec![p * 2 + 1, 12 + p * 2 + 1],
                });
            }
        }
        l
    }

    #[test]
    fn subsets_keep_whole_paragraphs_and_every_relevant_candidate() {
        let full = toy();
        let sub = full.subset(2);
        // Two question ids, in both languages; their paragraphs in both languages.
        assert_eq!(sub.queries.len(), 4);
        assert_eq!(sub.candidates.len(), 8);
        assert_eq!(sub.contexts.len(), 4);
        for q in &sub.queries {
            assert_eq!(q.relevant.len(), 2);
            let id = q.question_id.trim_start_matches('q');
            for &c in &q.relevant {
                let cand = &sub.candidates[c].text.id;
                assert!(
                    cand.ends_with(&format!("-{id}-1")),
                    "{cand} for {}",
                    q.question_id
                );
            }
        }
        // Deterministic, and the whole set when asked for at least every question.
        let again = full.subset(2);
        let ids = |l: &Lareqa| {
            l.queries
                .iter()
                .map(|q| q.text.id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&sub), ids(&again));
        assert_eq!(full.subset(6).queries.len(), 12);
        assert_eq!(full.subset(100).candidates.len(), 24);
    }
}
