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

/// A markdown table; cells are escaped for `|`.
pub fn markdown_table(headers: &[String], rows: &[Vec<String>]) -> String {
    let esc = |s: &str| s.replace('|', "\\|");
    let mut out = String::new();
    out.push_str(&format!(
        "| {} |\n",
        headers.iter().map(|h| esc(h)).collect::<Vec<_>>().join(" | ")
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
    pub models: Vec<ModelResults>,
}

/// File-name-safe version of a label.
fn slug(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
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
                            m.tasks.first()?.per_language.get(label)?.get(&self.main_metric).copied()
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
             full candidate pool.\n\n## Overall\n\n",
            self.dataset,
            match self.scoring {
                Scoring::Dense => "dense",
                Scoring::MaxSim => "MaxSim",
            }
        );
        let measures: Vec<String> = self
            .models
            .first()
            .and_then(|m| m.tasks.first())
            .map(|t| t.metrics.keys().cloned().collect())
            .unwrap_or_default();
        let mut headers = vec!["model".to_string(), "task".into(), "queries".into(), "candidates".into()];
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
        md.push_str(&format!("\n## Per language ({})\n\n", self.main_metric));
        let mut headers = vec!["language".to_string()];
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
                    values.iter().map(|row| row[k].unwrap_or(f64::NAN)).collect(),
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
    std::fs::write(path, text).map_err(|e| Error::io(path, "write", e))?;
    Ok(path.to_path_buf())
}
