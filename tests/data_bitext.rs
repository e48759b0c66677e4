//! Bitext loaders: alignment, malformed files (misaligned line counts, empty sentences,
//! broken XML and CSV) named with file and line, and the shared Tatoeba/MAFAND/Bible data.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use optical::data::bitext::{self, read_aligned, read_ces_verses, read_web_csv, BlankLines};
use optical::data::{self, DatasetName, LoadOptions};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A data directory that is not there: the error says how to point at one.
#[test]
fn a_missing_data_directory_says_how_to_set_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-data");
    for dataset in [
        DatasetName::Tatoeba,
        DatasetName::Mafand,
        DatasetName::Bible,
    ] {
        let e = data::load_bitexts(dataset, &missing, &LoadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no-data") && e.contains("--data-dir") && e.contains("OPTICAL_DATA_DIR"),
            "{dataset:?}: {e}"
        );
    }
    for dataset in [DatasetName::XquadR, DatasetName::MlqaR] {
        let e = optical::data::lareqa::Lareqa::load(&missing, dataset, &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no-data") && e.contains("--data-dir") && e.contains("OPTICAL_DATA_DIR"),
            "{dataset:?}: {e}"
        );
    }
}

#[test]
fn aligned_files_become_two_directions() {
    let dir = tempfile::tempdir().unwrap();
    let s = write(dir.path(), "a.swh", "Habari\r\nAsante\n");
    let t = write(dir.path(), "a.eng", "Hello\nThanks");
    let b = read_aligned("toy", "swh", &s, "eng", &t, BlankLines::Refuse).unwrap();
    assert_eq!(b.source, ["Habari", "Asante"]);
    let [x_en, en_x] = b.tasks();
    assert_eq!(x_en.name, "swh-eng");
    assert_eq!(en_x.name, "eng-swh");
    assert_eq!(x_en.queries[1].text, "Asante");
    assert_eq!(x_en.candidates[1].id, "eng-00001");
    assert_eq!(en_x.relevant, vec![vec![0], vec![1]]);
}

#[test]
fn misaligned_and_empty_lines_are_errors_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let s = write(dir.path(), "m.swh", "a\nb\nc\n");
    let t = write(dir.path(), "m.eng", "a\nb\n");
    let msg = read_aligned("toy", "swh", &s, "eng", &t, BlankLines::Refuse)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("m.swh") && msg.contains("m.eng") && msg.contains("(2), found 3"),
        "{msg}"
    );
    let e = write(dir.path(), "e.swh", "a\n \nc\n");
    let msg = bitext::read_lines(&e, BlankLines::Refuse)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("e.swh: line 2: expected a sentence, found an empty line"),
        "{msg}"
    );
    // Training bitext keeps the blank line for its reader to skip with its pair.
    assert_eq!(
        bitext::read_lines(&e, BlankLines::Keep).unwrap(),
        ["a", " ", "c"]
    );
    // Blank lines at the end of a file (`echo >> file`) are not lines.
    let tail = write(dir.path(), "t.swh", "a\r\nb\r\n\r\n \n\n");
    for blanks in [BlankLines::Refuse, BlankLines::Keep] {
        assert_eq!(bitext::read_lines(&tail, blanks).unwrap(), ["a", "b"]);
    }
    for (empty, says) in [
        ("", "found an empty file"),
        ("\n", "found an empty file"),
        (" \n\n", "found only blank lines"),
    ] {
        let z = write(dir.path(), "z.swh", empty);
        let e = bitext::read_lines(&z, BlankLines::Keep).unwrap_err();
        assert!(e.to_string().contains(says), "{e}");
        // Aligned files say the same.
        let y = write(dir.path(), "y.eng", empty);
        let e = read_aligned("toy", "swh", &z, "eng", &y, BlankLines::Keep).unwrap_err();
        assert!(e.to_string().contains(says), "{e}");
    }
    let bad = dir.path().join("bad.swh");
    std::fs::write(&bad, b"ok\nfine\n\xff\xfe\n").unwrap();
    let msg = bitext::read_lines(&bad, BlankLines::Refuse)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("expected UTF-8 text, found an invalid byte on line 3"),
        "{msg}"
    );
    let utf16 = dir.path().join("u16.swh");
    std::fs::write(&utf16, b"\xff\xfeo\0k\0").unwrap();
    let msg = bitext::read_lines(&utf16, BlankLines::Refuse)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("line 1") && msg.contains("UTF-16"), "{msg}");
}

#[test]
fn language_codes_with_whitespace_are_refused_with_their_file() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("tatoeba");
    std::fs::create_dir(&t).unwrap();
    write(&t, "tatoeba.a b-eng.a b", "x\n");
    write(&t, "tatoeba.a b-eng.eng", "y\n");
    let err = bitext::tatoeba_languages(dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tatoeba.a b-eng.a b")
            && err.contains("without whitespace in the name, found \"a b\""),
        "{err}"
    );
    let b = dir.path().join("bible");
    std::fs::create_dir(&b).unwrap();
    write(&b, "Old Wolof-NT.xml", CES);
    let err = bitext::bible_languages(dir.path()).unwrap_err().to_string();
    assert!(err.contains("Old Wolof-NT.xml"), "{err}");
}

/// MAFAND-MT directories are languages of the splits they have: a language without a
/// training split is evaluated, not trained on, and asking for it names those that have it.
#[test]
fn mafand_languages_are_those_with_the_split() {
    let dir = tempfile::tempdir().unwrap();
    for (lang, splits) in [("hau", &["train", "dev"][..]), ("amh", &["dev"][..])] {
        let d = dir.path().join("mafand").join(format!("en-{lang}"));
        std::fs::create_dir_all(&d).unwrap();
        for split in splits {
            write(&d, &format!("{split}.{lang}"), "x\n\ny\n");
            write(&d, &format!("{split}.en"), "a\nb\nc\n");
        }
    }
    assert_eq!(
        bitext::mafand_languages(dir.path(), "dev").unwrap(),
        ["amh", "hau"]
    );
    assert_eq!(
        bitext::mafand_languages(dir.path(), "train").unwrap(),
        ["hau"]
    );
    let err = bitext::mafand(dir.path(), "amh", "train")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("a language with a MAFAND-MT train split (hau), found amh"),
        "{err}"
    );
    // The evaluation splits refuse the blank line; the training split keeps it.
    let err = bitext::mafand(dir.path(), "hau", "dev")
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2"), "{err}");
    assert_eq!(
        bitext::mafand(dir.path(), "hau", "train").unwrap().source,
        ["x", "", "y"]
    );
    let opts = LoadOptions {
        split: Some("train".into()),
        ..LoadOptions::default()
    };
    let err = data::load_tasks(DatasetName::Mafand, dir.path(), &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected dev or test, found train"), "{err}");
    // One side of a split (a copy cut short) is an error naming the missing file, not a
    // language left out.
    let ibo = dir.path().join("mafand").join("en-ibo");
    std::fs::create_dir_all(&ibo).unwrap();
    write(&ibo, "dev.ibo", "x\n");
    let err = bitext::mafand_languages(dir.path(), "dev")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("en-ibo/dev.en") && err.contains("both sides of the dev split of ibo"),
        "{err}"
    );
    assert_eq!(
        bitext::mafand_languages(dir.path(), "train").unwrap(),
        ["hau"]
    );
}

const CES: &str = r#"<?xml version="1.0" ?>
<cesDoc version="4">
  <cesHeader><segmentation>Marked up to the level of verse.</segmentation></cesHeader>
  <text><body>
    <div id="b.MAT" type="book">
      <seg id="b.MAT.1.1" type="verse">
        Yesu &quot;Kristo&quot; &amp; Daudi
      </seg>
      <seg id="b.MAT.1.2" type="verse">  </seg>
      <seg id="b.MAT.1.3" type="verse">Tatu</seg>
      <seg id="b.REV.22.21" type="verse">Mwisho</seg>
    </div>
  </body></text>
</cesDoc>
"#;

const WEB: &str = "field,field,field,field,field\n\
\"01001001\",\"1\",\"1\",\"1\",\"In the beginning\"\n\
\"40001001\",\"40\",\"1\",\"1\",\"Jesus {a note} \"\"Christ\"\"\"\n\
\"40001002\",\"40\",\"1\",\"2\",\"Second\"\n\
\"66022021\",\"66\",\"22\",\"21\",\"The end\"\n";

fn bible_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("bible")).unwrap();
    write(&dir.path().join("bible"), "Swahili-NT.xml", CES);
    let gz = dir.path().join("t_web.csv.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::default(),
    );
    enc.write_all(WEB.as_bytes()).unwrap();
    enc.finish().unwrap();
    (dir, gz)
}

#[test]
fn bible_verses_align_by_id() {
    let (dir, gz) = bible_dir();
    let b = bitext::bible(dir.path(), "swa", &gz).unwrap();
    // MAT.1.2 is empty in Swahili and MAT.1.3 has no English: both left out.
    assert_eq!(b.source, ["Yesu \"Kristo\" & Daudi", "Mwisho"]);
    assert_eq!(b.target, ["Jesus \"Christ\"", "The end"]);
    // Uncompressed CSV reads the same.
    let csv = write(dir.path(), "t_web.csv", WEB);
    assert_eq!(read_web_csv(&csv).unwrap(), read_web_csv(&gz).unwrap());
    // So does a gzip file of several members (`cat a.gz b.gz`), as `zcat` reads it.
    let multi = dir.path().join("multi.csv.gz");
    let cut = WEB.find("\"40001002\"").unwrap();
    let mut bytes = Vec::new();
    for part in [&WEB[..cut], &WEB[cut..]] {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(part.as_bytes()).unwrap();
        bytes.extend(enc.finish().unwrap());
    }
    std::fs::write(&multi, bytes).unwrap();
    assert_eq!(read_web_csv(&multi).unwrap(), read_web_csv(&gz).unwrap());
    let err = bitext::bible(dir.path(), "zul", &gz)
        .unwrap_err()
        .to_string();
    assert!(err.contains("swa"), "{err}");
}

/// Whole Bibles (`<Name>.xml`) and parts (`<Name>-PART.xml`) are translations too, named by
/// ISO 639-3 code where the corpus's name is known and by the name otherwise; an English
/// file is not a translation to align with English.
#[test]
fn bible_files_of_every_kind_are_found() {
    let (dir, gz) = bible_dir();
    let b = dir.path().join("bible");
    write(&b, "Xhosa.xml", CES);
    write(&b, "Armenian-PART.xml", CES);
    write(&b, "Amuzgo-NT.xml", CES);
    write(&b, "English.xml", CES);
    write(&b, "README.md", "notes");
    // As the corpus ships them: a language with several kinds takes the one with the most
    // verses; tokenised copies and second translations are other files.
    write(&b, "Xhosa-NT.xml", CES);
    write(&b, "Chinese.xml", CES);
    write(&b, "Chinese-tok.xml", CES);
    write(&b, "K'iche'-NT.xml", CES);
    write(&b, "K'iche'-NT-SIL.xml", CES);
    let found: Vec<(String, String)> = bitext::bible_languages(dir.path())
        .unwrap()
        .into_iter()
        .map(|(c, f)| (c, f.file_name().unwrap().to_string_lossy().into_owned()))
        .collect();
    let codes: Vec<&str> = found.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(codes, ["amuzgo", "hye", "zho", "k'iche'", "swa", "xho"]);
    assert!(
        found.contains(&("xho".into(), "Xhosa.xml".into())),
        "{found:?}"
    );
    assert_eq!(bitext::bible(dir.path(), "xho", &gz).unwrap().len(), 2);
}

#[test]
fn two_bible_files_for_one_language_are_refused() {
    let (dir, gz) = bible_dir();
    // `swa-NT.xml` is Swahili too: which one to train on is the user's choice, not the
    // order of the names.
    write(&dir.path().join("bible"), "swa-NT.xml", CES);
    for err in [
        bitext::bible_languages(dir.path()).unwrap_err().to_string(),
        bitext::bible(dir.path(), "swa", &gz)
            .unwrap_err()
            .to_string(),
    ] {
        assert!(
            err.contains("expected one Bible file for language swa, found two: Swahili-NT.xml and swa-NT.xml"),
            "{err}"
        );
    }
}

#[test]
fn malformed_bible_files_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let unclosed = write(
        dir.path(),
        "u.xml",
        "<x>\n<seg id=\"b.MAT.1.1\">text\n</x>\n",
    );
    let msg = read_ces_verses(&unclosed).unwrap_err().to_string();
    assert!(
        msg.contains("u.xml: line 2: <seg id=\"b.MAT.1.1\"> has no </seg>"),
        "{msg}"
    );
    let noid = write(dir.path(), "n.xml", "<x>\n\n<seg type=\"verse\">t</seg>\n");
    let msg = read_ces_verses(&noid).unwrap_err().to_string();
    assert!(msg.contains("n.xml: line 3: expected an id"), "{msg}");
    let twice = write(
        dir.path(),
        "t.xml",
        "<x>\n<seg id=\"b.MAT.1.1\">a</seg>\n<seg id=\"b.MAT.1.2\">b</seg>\n<seg id=\"b.MAT.1.1\">c</seg>\n",
    );
    let msg = read_ces_verses(&twice).unwrap_err().to_string();
    assert!(
        msg.contains("t.xml: line 4: verse id \"b.MAT.1.1\" already used on line 2"),
        "{msg}"
    );
    // Cut short (an interrupted download): every verse well formed, the root not closed.
    let cut = write(
        dir.path(),
        "c.xml",
        "<?xml version=\"1.0\" ?>\n<cesDoc>\n<seg id=\"b.MAT.1.1\">a</seg>\n<seg id=\"b.MAT.1.2\">b</seg>\n",
    );
    let msg = read_ces_verses(&cut).unwrap_err().to_string();
    assert!(
        msg.contains("c.xml: expected the document to end with </cesDoc>, found it cut short after the verse on line 4"),
        "{msg}"
    );
    let none = write(dir.path(), "e.xml", "<x><segmentation/></x>");
    assert!(read_ces_verses(&none)
        .unwrap_err()
        .to_string()
        .contains("found none"));
    let bad = write(dir.path(), "b.csv", "h\n\"40001001\",\"40\",\"1\",\"1\"\n");
    let msg = read_web_csv(&bad).unwrap_err().to_string();
    assert!(msg.contains("b.csv: line 2: expected 5 fields"), "{msg}");
    let quote = write(
        dir.path(),
        "q.csv",
        "h\n\"40001001\",\"40\",\"1\",\"1\",\"open\n",
    );
    assert!(read_web_csv(&quote)
        .unwrap_err()
        .to_string()
        .contains("line 2: unbalanced quotes"));
    let book = write(dir.path(), "k.csv", "h\n\"1\",\"99\",\"1\",\"1\",\"x\"\n");
    assert!(read_web_csv(&book)
        .unwrap_err()
        .to_string()
        .contains("book number 1..=66, found 99"));
    // A header alone, or Old Testament rows only: no verse to align with.
    for (name, text) in [
        ("h.csv", "h\n"),
        ("o.csv", "h\n\"1001001\",\"1\",\"1\",\"1\",\"x\"\n"),
    ] {
        let empty = write(dir.path(), name, text);
        let msg = read_web_csv(&empty).unwrap_err().to_string();
        assert!(
            msg.contains(&format!("{name}: expected New Testament verse rows")),
            "{msg}"
        );
    }
    let notgz = dir.path().join("g.csv.gz");
    std::fs::write(&notgz, [0x1f, 0x8b, 0, 1, 2]).unwrap();
    assert!(read_web_csv(&notgz)
        .unwrap_err()
        .to_string()
        .contains("gzip"));
}

fn shared_data() -> Option<PathBuf> {
    let dir = data::data_dir(None);
    let found = dir.join("tatoeba").is_dir() && dir.join("mafand").is_dir();
    if !found {
        common::skip_or_fail(&format!("no bitext data under {}", dir.display()));
    }
    found.then_some(dir)
}

#[test]
fn shared_tatoeba_and_mafand() {
    let Some(dir) = shared_data() else { return };
    let langs = bitext::tatoeba_languages(&dir).unwrap();
    assert_eq!(langs.len(), 112);
    for l in ["swh", "amh", "mar", "hin"] {
        assert!(langs.iter().any(|x| x == l), "{l}");
    }
    let t = bitext::tatoeba(&dir, "amh").unwrap();
    assert_eq!(t.len(), 168);
    let m = bitext::mafand(&dir, "hau", "dev").unwrap();
    assert_eq!(m.len(), 1300);
    // Ten of the fifteen languages have a training split.
    let train = bitext::mafand_languages(&dir, "train").unwrap();
    assert_eq!(train.len(), 10, "{train:?}");
    assert!(!train.iter().any(|l| l == "amh"));
    let opts = LoadOptions {
        languages: vec!["yor".into(), "amh".into()],
        split: Some("test".into()),
        english_bible: None,
        max_pairs: None,
    };
    let tasks = data::load_tasks(DatasetName::Mafand, &dir, &opts).unwrap();
    let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["amh-eng", "eng-amh", "yor-eng", "eng-yor"]);
}

#[test]
fn shared_bible_aligns_most_verses() {
    let Some(dir) = shared_data() else { return };
    let eng = bitext::default_english_bible();
    if !eng.is_file() {
        common::skip_or_fail(&format!(
            "{} missing (scripts/setup.d/40-bible.sh)",
            eng.display()
        ));
        return;
    }
    for (code, file) in bitext::bible_languages(&dir).unwrap() {
        let verses = read_ces_verses(&file).unwrap();
        let b = bitext::bible(&dir, &code, &eng).unwrap();
        // The New Testament has 7,957 verses; a few are merged or missing per translation.
        assert!(
            b.len() > 7_800 && b.len() <= verses.len(),
            "{code}: {}",
            b.len()
        );
    }
}

#[test]
fn a_dataset_directory_without_its_files_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    for (name, sub) in [
        (DatasetName::Tatoeba, "tatoeba"),
        (DatasetName::Mafand, "mafand"),
        (DatasetName::Bible, "bible"),
    ] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        write(&dir.path().join(sub), "notes.txt", "not a dataset file\n");
        let err = data::load_tasks(name, dir.path(), &LoadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(sub) && err.contains("(the data README's layout), found none"),
            "{name:?}: {err}"
        );
    }
}
