//! `optical data fetch` against a local mirror (a Python HTTP server over a directory laid
//! out as the upstream repositories are): files land where the loaders read them, files
//! already there are kept, and a missing file is an error that names its URL and leaves no
//! partial file. Needs `curl` and `python3` (both fail the test when missing, not skip it).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use optical::data::fetch::files;
use optical::data::DatasetName;

struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A server over `root` on a free port; its base URL.
fn serve(root: &Path) -> (Server, String) {
    let mut child = Command::new("python3")
        .args([
            "-u",
            "-c",
            "import http.server, functools, sys\n\
             h = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])\n\
             s = http.server.ThreadingHTTPServer(('127.0.0.1', 0), h)\n\
             print(s.server_address[1], flush=True)\n\
             s.serve_forever()",
        ])
        .arg(root)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 (the test serves a mirror with http.server)");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().expect("the server's port");
    (Server(child), format!("http://127.0.0.1:{port}"))
}

fn fetch(base: &str, data: &Path, datasets: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_optical"))
        .args(["data", "fetch", "--datasets", datasets, "--data-dir"])
        .arg(data)
        .env("OPTICAL_DATA_MIRROR", base)
        .output()
        .unwrap()
}

#[test]
fn fetch_fills_the_data_directory_from_a_mirror() {
    let root = tempfile::tempdir().unwrap();
    let mirror = root.path().join("mirror");
    for (k, f) in files(DatasetName::Bible).iter().enumerate() {
        let path = mirror.join(&f.remote);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("<bible {k}/>\n")).unwrap();
    }
    let (_server, base) = serve(&mirror);
    let data = root.path().join("data");

    let o = fetch(&base, &data, "bible");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        stdout.contains("bible    3 downloaded, 0 already there"),
        "{stdout}"
    );
    for (k, f) in files(DatasetName::Bible).iter().enumerate() {
        let got = std::fs::read_to_string(data.join(&f.local)).unwrap();
        assert_eq!(got, format!("<bible {k}/>\n"));
    }
    assert!(data.join("bible/Swahili-NT.xml").is_file());

    // Again: nothing to download.
    let o = fetch(&base, &data, "bible");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("bible    0 downloaded, 3 already there"),
        "{stdout}"
    );

    // A file the mirror lacks: exit 2, its URL named, no partial file.
    let o = fetch(&base, &data, "mlqa-r");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "expected {base}/google-research-datasets/lareqa/354d67d1cd066854cdfbf5ad0e6105528976141d/mlqa-r/ar.json to download"
        )),
        "{stderr}"
    );
    let mlqa = data.join("lareqa/mlqa-r");
    let left: Vec<_> = std::fs::read_dir(&mlqa)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");

    // An unknown dataset is a usage error.
    let o = fetch(&base, &data, "squad");
    assert_eq!(o.status.code(), Some(2));
}
