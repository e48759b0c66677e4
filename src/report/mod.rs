//! Reports shared by `optical eval` (and later distill and study): markdown tables and
//! SVG plots ([`svg`]) written into an output directory.
//!
//! [`EvalReport::write`] produces `results.json` (every number), `report.md` (overall
//! table, per-language table, and for multilingual pools the query-language ×
//! candidate-language breakdown of each model), `per_language.svg` (a bar per model and
//! language) and `heatmap_<model>_<task>.svg`.

pub mod svg;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::retrieval::evaluate::{Scoring, TaskResult};

/// A markdown table; cells are escaped for `|`, and a line break in one (a description
/// written over two lines) becomes a space, since it would end the row.
pub fn markdown_table(headers: &[String], rows: &[Vec<String>]) -> String {
    let esc = |s: &str| {
        s.replace('|', "\\|")
            .replace("\r\n", " ")
            .replace(['\r', '\n'], " ")
    };
    let mut out = String::new();
    out.push_str(&format!(
        "| {} |\n",
        headers
            .iter()
            .map(|h| esc(h))
            .collect::<Vec<_>>()
            .join(" | ")
    ));
    out.push_str(&format!("|{}\n", " --- |".repeat(headers.len())));
    for r in rows {
        out.push_str(&format!(
            "| {} |\n",
            r.iter().map(|c| esc(c)).collect::<Vec<_>>().join(" | ")
        ));
    }
    out
}

/// A value for a table: four decimals, `–` when missing.
pub fn cell(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.4}"),
        _ => "–".to_string(),
    }
}

/// The results of one model on every task of a dataset.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModelResults {
    pub model: String,
    pub tasks: Vec<TaskResult>,
}

/// Everything `optical eval` measured in one call.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EvalReport {
    pub dataset: String,
    pub scoring: Scoring,
    /// The measure the per-language table and plots show (`map` for LAReQA, `P_1` for
    /// bitext).
    pub main_metric: String,
    /// How LAReQA's answer sentences were encoded (`None` for bitext).
    pub lareqa_candidates: Option<crate::retrieval::encoder::TextRole>,
    pub settings: EvalSettings,
    pub models: Vec<ModelResults>,
}

/// The settings of an evaluation that change its numbers, kept beside them (two reports
/// of one dataset differ in these or in their models).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct EvalSettings {
    /// The query languages evaluated, in the tasks' order (a `--languages` subset of a
    /// LAReQA set is a smaller pool, whose mAP is not the whole set's).
    pub languages: Vec<String>,
    /// The backend asked for: the encoders' device, and MaxSim's kernels.
    pub backend: String,
    /// The token limit of every text (`None`: each model's own).
    pub max_length: Option<usize>,
    /// Documents per query in the TREC runs (the measures rank the whole pool).
    pub k: usize,
    /// LAReQA candidates encoded with their paragraph after the sentence.
    pub candidate_context: bool,
    /// The MAFAND split (`None` for the other datasets).
    pub split: Option<String>,
    /// Only the first N pairs of each bitext.
    pub max_pairs: Option<usize>,
}

impl EvalSettings {
    /// One markdown paragraph.
    fn markdown(&self) -> String {
        let mut parts = vec![format!("languages {}", self.languages.join(", "))];
        if let Some(split) = &self.split {
            parts.push(format!("split {split}"));
        }
        if let Some(n) = self.max_pairs {
            parts.push(format!("the first {n} pairs of each bitext"));
        }
        parts.push(format!("backend {}", self.backend));
        parts.push(match self.max_length {
            Some(n) => format!("texts cut at {n} tokens"),
            None => "texts cut at each model's token limit".into(),
        });
        parts.push(format!("TREC runs keep each query's top {}", self.k));
        format!("Settings: {}.", parts.join("; "))
    }
}

/// File-name-safe version of a label.
/// `s` usable in a file name: every character outside `[A-Za-z0-9_-]` becomes `_` (a
/// model given by path, `runs/hau/student`, becomes `runs_hau_student`).
pub fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl EvalReport {
    /// Row labels and `values[row][model]` of the per-language view: with one task per
    /// model, its query languages; otherwise one row per task.
    pub fn per_language(&self) -> (Vec<String>, Vec<Vec<Option<f64>>>) {
        let first = match self.models.first() {
            Some(m) => m,
            None => return (vec![], vec![]),
        };
        let single = first.tasks.len() == 1;
        let labels: Vec<String> = if single {
            first.tasks[0].per_language.keys().cloned().collect()
        } else {
            first.tasks.iter().map(|t| t.task.clone()).collect()
        };
        let values = labels
            .iter()
            .map(|label| {
                self.models
                    .iter()
                    .map(|m| {
                        if single {
                            m.tasks
                                .first()?
                                .per_language
                                .get(label)?
                                .get(&self.main_metric)
                                .copied()
                        } else {
                            m.tasks
                                .iter()
                                .find(|t| &t.task == label)?
                                .metrics
                                .get(&self.main_metric)
                                .copied()
                        }
                    })
                    .collect()
            })
            .collect();
        (labels, values)
    }

    /// The markdown report.
    pub fn markdown(&self, plots: &[PathBuf]) -> String {
        let mut md = format!(
            "# {} — {} scoring\n\nMeasures follow trec_eval's definitions; ranks are over the \
             full candidate pool.{}\n\n{}\n\n## Overall\n\n",
            self.dataset,
            match self.scoring {
                Scoring::Dense => "dense",
                Scoring::MaxSim => "MaxSim",
            },
            match self.lareqa_candidates {
                Some(role) => {
                    let answers = if self.settings.candidate_context {
                        "answer sentences, each followed by its paragraph (`--candidate-context`),"
                    } else {
                        "answer sentences"
                    };
                    match role {
                        crate::retrieval::encoder::TextRole::Passage => format!(
                            " Questions are encoded as queries, {answers} as passages (e5's \
                             `query: ` / `passage: ` prefixes)."
                        ),
                        crate::retrieval::encoder::TextRole::Query => format!(
                            " Questions and {answers} are both encoded as queries \
                             (`--lareqa-candidates query`)."
                        ),
                    }
                }
                None => String::new(),
            },
            self.settings.markdown()
        );
        let measures: Vec<String> = self
            .models
            .first()
            .and_then(|m| m.tasks.first())
            .map(|t| t.metrics.keys().cloned().collect())
            .unwrap_or_default();
        let mut headers = vec![
            "model".to_string(),
            "task".into(),
            "queries".into(),
            "candidates".into(),
        ];
        headers.extend(measures.iter().cloned());
        let measures = &measures;
        let rows: Vec<Vec<String>> = self
            .models
            .iter()
            .flat_map(|m| {
                m.tasks.iter().map(move |t| {
                    let mut r = vec![
                        m.model.clone(),
                        t.task.clone(),
                        t.queries.to_string(),
                        t.candidates.to_string(),
                    ];
                    r.extend(measures.iter().map(|k| cell(t.metrics.get(k).copied())));
                    r
                })
            })
            .collect();
        md.push_str(&markdown_table(&headers, &rows));

        let (labels, values) = self.per_language();
        // One task: its languages; several (bitext: one per language and direction): the
        // tasks themselves.
        let by_task = self.models.first().is_some_and(|m| m.tasks.len() > 1);
        md.push_str(&format!(
            "\n## Per {} ({})\n\n",
            if by_task { "task" } else { "language" },
            self.main_metric
        ));
        let mut headers = vec![if by_task { "task" } else { "language" }.to_string()];
        headers.extend(self.models.iter().map(|m| m.model.clone()));
        let rows: Vec<Vec<String>> = labels
            .iter()
            .zip(&values)
            .map(|(l, v)| {
                let mut r = vec![l.clone()];
                r.extend(v.iter().map(|&x| cell(x)));
                r
            })
            .collect();
        md.push_str(&markdown_table(&headers, &rows));

        for m in &self.models {
            for t in &m.tasks {
                if let Some(b) = &t.breakdown {
                    md.push_str(&format!(
                        "\n## {} on {}: mAP by query language (rows) × candidate language (columns)\n\n",
                        m.model, t.task
                    ));
                    let mut headers = vec!["query \\ candidate".to_string()];
                    headers.extend(b.candidate_languages.iter().cloned());
                    let rows: Vec<Vec<String>> = b
                        .query_languages
                        .iter()
                        .zip(&b.map)
                        .map(|(l, v)| {
                            let mut r = vec![l.clone()];
                            r.extend(v.iter().map(|&x| cell(x)));
                            r
                        })
                        .collect();
                    md.push_str(&markdown_table(&headers, &rows));
                }
            }
        }
        if !plots.is_empty() {
            md.push_str("\n## Plots\n\n");
            for p in plots {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                md.push_str(&format!("![{name}]({name})\n\n"));
            }
        }
        md
    }

    /// Write `results.json`, `report.md` and the SVG plots into `dir`; returns the paths.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "create", e))?;
        let mut plots = Vec::new();
        let (labels, values) = self.per_language();
        let series: Vec<(String, Vec<f64>)> = self
            .models
            .iter()
            .enumerate()
            .map(|(k, m)| {
                (
                    m.model.clone(),
                    values
                        .iter()
                        .map(|row| row[k].unwrap_or(f64::NAN))
                        .collect(),
                )
            })
            .collect();
        let bar = svg::bar_chart(
            &format!("{}: {} per language", self.dataset, self.main_metric),
            &self.main_metric,
            &labels,
            &series,
        );
        plots.push(write_file(&dir.join("per_language.svg"), &bar)?);
        for m in &self.models {
            for t in &m.tasks {
                if let Some(b) = &t.breakdown {
                    let svg = svg::heatmap(
                        &format!("{} on {}: mAP (×100)", m.model, t.task),
                        "query language",
                        "candidate language",
                        &b.query_languages,
                        &b.candidate_languages,
                        &b.map,
                    );
                    let name = format!("heatmap_{}_{}.svg", slug(&m.model), slug(&t.task));
                    plots.push(write_file(&dir.join(name), &svg)?);
                }
            }
        }
        let json = serde_json::to_string_pretty(self).map_err(|e| Error::Value {
            context: "results.json".into(),
            what: e.to_string(),
        })?;
        let mut written = vec![
            write_file(&dir.join("results.json"), &json)?,
            write_file(&dir.join("report.md"), &self.markdown(&plots))?,
        ];
        written.extend(plots);
        Ok(written)
    }
}

fn write_file(path: &Path, text: &str) -> Result<PathBuf> {
    crate::io::write_atomic(path, text)?;
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::retrieval::evaluate::Breakdown;

    /// Tags open and close in order, attributes are quoted, and `&` only starts a known
    /// entity: enough to catch the mistakes a hand-written SVG writer can make.
    pub(crate) fn assert_well_formed_xml(text: &str) {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = text;
        while let Some(i) = rest.find(['<', '&']) {
            let (before, after) = rest.split_at(i);
            assert!(!before.contains('>'), "stray '>' in text: {before:?}");
            if after.starts_with('&') {
                let end = after.find(';').expect("entity ends with ';'");
                let ent = &after[1..end];
                assert!(
                    ["amp", "lt", "gt", "quot", "apos"].contains(&ent) || ent.starts_with('#'),
                    "unknown entity &{ent};"
                );
                rest = &after[end + 1..];
                continue;
            }
            let end = after.find('>').expect("tag closes");
            let tag = &after[1..end];
            assert_eq!(
                tag.matches('"').count() % 2,
                0,
                "unbalanced quotes in <{tag}>"
            );
            assert!(!tag.contains('<'), "'<' inside tag {tag:?}");
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name), "mismatched </{name}>");
            } else if !tag.ends_with('/') && !tag.starts_with('?') {
                let name = tag.split_whitespace().next().expect("tag name");
                stack.push(name.to_string());
            }
            rest = &after[end + 1..];
        }
        assert!(stack.is_empty(), "unclosed tags {stack:?}");
    }

    fn task(name: &str, map: f64, with_breakdown: bool) -> TaskResult {
        let m = |v: f64| -> BTreeMap<String, f64> {
            [("map".to_string(), v), ("P_1".to_string(), v / 2.0)]
                .into_iter()
                .collect()
        };
        TaskResult {
            task: name.into(),
            queries: 3,
            candidates: 5,
            metrics: m(map),
            per_language: [
                ("en".to_string(), m(map)),
                ("de & <x>".to_string(), m(map / 3.0)),
            ]
            .into_iter()
            .collect(),
            breakdown: with_breakdown.then(|| Breakdown {
                query_languages: vec!["en".into(), "de & <x>".into()],
                candidate_languages: vec!["en".into(), "de".into(), "zh".into()],
                map: vec![
                    vec![Some(0.9), Some(0.2), None],
                    vec![Some(0.1), Some(1.0), Some(0.0)],
                ],
            }),
            encode_seconds: 0.0,
            search_seconds: 0.0,
        }
    }

    #[test]
    fn lareqa_report_files_are_written_and_well_formed() {
        let report = EvalReport {
            dataset: "xquad-r".into(),
            scoring: Scoring::Dense,
            main_metric: "map".into(),
            lareqa_candidates: Some(crate::retrieval::encoder::TextRole::Passage),
            settings: EvalSettings {
                languages: vec!["en".into(), "de".into()],
                backend: "cpu".into(),
                k: 100,
                candidate_context: true,
                ..EvalSettings::default()
            },
            models: vec![
                ModelResults {
                    model: "hash".into(),
                    tasks: vec![task("xquad-r", 0.6, true)],
                },
                ModelResults {
                    model: "e5|small".into(),
                    tasks: vec![task("xquad-r", 0.3, true)],
                },
            ],
        };
        let dir = tempfile::tempdir().unwrap();
        let files = report.write(dir.path()).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "results.json",
                "report.md",
                "per_language.svg",
                "heatmap_hash_xquad-r.svg",
                "heatmap_e5_small_xquad-r.svg"
            ]
        );
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            if f.extension().is_some_and(|e| e == "svg") {
                assert!(text.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
                assert_well_formed_xml(&text);
            }
        }
        let svg = std::fs::read_to_string(dir.path().join("per_language.svg")).unwrap();
        // One bar per model and language: 2 × 2.
        assert_eq!(svg.matches("<title>").count(), 4);
        assert!(svg.contains("de &amp; &lt;x&gt;"));
        let heat = std::fs::read_to_string(dir.path().join("heatmap_hash_xquad-r.svg")).unwrap();
        assert!(heat.contains(">90<") && heat.contains(">100<") && heat.contains("#cccccc"));
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("results.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(json["models"][1]["tasks"][0]["metrics"]["map"], 0.3);
        let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
        assert!(
            md.contains(
                "answer sentences, each followed by its paragraph (`--candidate-context`), as \
                 passages"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "Settings: languages en, de; backend cpu; texts cut at each model's token \
                 limit; TREC runs keep each query's top 100."
            ),
            "{md}"
        );
        assert_eq!(json["settings"]["candidate_context"], true);
        assert_eq!(json["lareqa_candidates"], "passage");
        assert!(md.contains("| language | hash | e5\\|small |"), "{md}");
        assert!(md.contains("| en | 0.6000 | 0.3000 |"), "{md}");
        assert!(md.contains("| en | 0.9000 | 0.2000 | – |"), "{md}");
        // Every table row has as many cells as its header.
        for block in md.split("\n\n").filter(|b| b.starts_with('|')) {
            let cols: Vec<usize> = block.lines().map(|l| l.matches(" | ").count()).collect();
            assert!(cols.windows(2).all(|w| w[0] == w[1]), "{block}");
        }
    }

    #[test]
    fn bitext_report_has_one_row_per_task() {
        let report = EvalReport {
            dataset: "tatoeba".into(),
            scoring: Scoring::MaxSim,
            main_metric: "P_1".into(),
            lareqa_candidates: None,
            settings: EvalSettings::default(),
            models: vec![ModelResults {
                model: "hash".into(),
                tasks: vec![task("swh-eng", 0.8, false), task("eng-swh", 0.4, false)],
            }],
        };
        let (labels, values) = report.per_language();
        assert_eq!(labels, ["swh-eng", "eng-swh"]);
        assert_eq!(values, vec![vec![Some(0.4)], vec![Some(0.2)]]);
        let dir = tempfile::tempdir().unwrap();
        let files = report.write(dir.path()).unwrap();
        assert_eq!(files.len(), 3, "no heatmap without a breakdown");
        assert_well_formed_xml(
            &std::fs::read_to_string(dir.path().join("per_language.svg")).unwrap(),
        );
        let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
        assert!(md.contains("| task | hash |\n"), "{md}");
    }

    #[test]
    fn delta_charts_are_well_formed_and_signed() {
        let cats = vec!["en".to_string(), "de & x".to_string()];
        let bars = svg::delta_bar_chart(
            "deltas",
            "Δ",
            &cats,
            &[
                ("ot".into(), vec![0.03, -0.012]),
                ("mse".into(), vec![f64::NAN, 0.004]),
            ],
        );
        assert_well_formed_xml(&bars);
        assert_eq!(bars.matches("<title>").count(), 3, "NaN is not drawn");
        assert!(
            bars.contains("-0.050") && bars.contains("+0.050"),
            "symmetric axis"
        );
        let heat = svg::delta_heatmap(
            "heat",
            "q",
            "c",
            &cats,
            &cats,
            &[vec![Some(0.02), Some(-0.1)], vec![None, Some(0.0)]],
        );
        assert_well_formed_xml(&heat);
        assert!(heat.contains(">+2.0<") && heat.contains(">-10.0<") && heat.contains("#cccccc"));
        // Negative cells are red, positive blue, zero white.
        assert!(heat.contains("fill=\"#b2182b\"") && heat.contains("fill=\"#ffffff\""));
    }

    #[test]
    fn markdown_tables_escape_pipes() {
        let t = markdown_table(
            &["a|b".into(), "c".into()],
            &[vec!["1".into(), "x|y".into()]],
        );
        assert_eq!(t, "| a\\|b | c |\n| --- | --- |\n| 1 | x\\|y |\n");
        // A line break in a cell would end its row.
        let t = markdown_table(&["a".into()], &[vec!["one\ntwo\r\nthree\rfour".into()]]);
        assert_eq!(t, "| a |\n| --- |\n| one two three four |\n");
    }

    #[test]
    fn svg_text_stays_well_formed_xml() {
        assert_eq!(svg::escape("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&apos;");
        assert_eq!(
            svg::escape("ot\u{1}x\u{0}\u{ffff}\tz\u{e9}"),
            "ot\u{fffd}x\u{fffd}\u{fffd}\tz\u{e9}"
        );
    }
}
