//! `host new`: a ready processor project in Rust, Python or JavaScript,
//! with the SDK copied in (the files are compiled into the host), so it
//! builds from a clean directory with only that language's toolchain.

use include_dir::{include_dir, Dir};
use std::path::{Path, PathBuf};

static RUST_SDK: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../plugins/sdk/src");
static PYTHON_SDK: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../plugins/sdk-python/kinesis_processor");
static JS_SDK: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../plugins/sdk-js/src");
const WIT: &str = include_str!("../../../wit/processor.wit");

/// The languages a project can be made in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

impl Lang {
    fn describe(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Lang::Rust => ("Rust", "`src/lib.rs`", "`vendor/kinesis-processor-sdk`"),
            Lang::Python => ("Python", "`app.py`", "`kinesis_processor/`"),
            Lang::Js => ("JavaScript", "`processor.js`", "`vendor/kinesis-processor`"),
        }
    }
}

/// What a new project does to start with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Template {
    /// `partition-key : data` for every record: the smallest processor.
    #[default]
    Echo,
    /// Keeps records by a JSON field and refuses data that is not JSON.
    Filter,
    /// Counts per key and time window, with state (snapshot, restore, merge).
    WindowCounter,
}

impl Template {
    /// The names `--template` takes.
    pub const NAMES: [&'static str; 3] = ["echo", "filter", "window-counter"];

    /// The template called `name`, if any.
    pub fn named(name: &str) -> Option<Self> {
        match name {
            "echo" => Some(Template::Echo),
            "filter" => Some(Template::Filter),
            "window-counter" => Some(Template::WindowCounter),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Template::Echo => "echo",
            Template::Filter => "filter",
            Template::WindowCounter => "window-counter",
        }
    }

    /// Its own files: what it does (for the README), sample records and
    /// their expected output, and the logic and unit tests per language.
    fn files(self) -> TemplateFiles {
        macro_rules! files {
            ($dir:literal) => {
                TemplateFiles {
                    about: include_str!(concat!("templates/", $dir, "/about.md")),
                    records: include_str!(concat!("templates/", $dir, "/records.jsonl")),
                    expected: include_str!(concat!("templates/", $dir, "/expected.txt")),
                    rust: include_str!(concat!("templates/", $dir, "/lib.rs")),
                    python: include_str!(concat!("templates/", $dir, "/app.py")),
                    python_test: include_str!(concat!("templates/", $dir, "/test_app.py")),
                    js: include_str!(concat!("templates/", $dir, "/processor.js")),
                    js_test: include_str!(concat!("templates/", $dir, "/processor.test.js")),
                }
            };
        }
        match self {
            Template::Echo => files!("echo"),
            Template::Filter => files!("filter"),
            Template::WindowCounter => files!("window-counter"),
        }
    }
}

/// The files a template brings (see [`Template::files`]).
struct TemplateFiles {
    about: &'static str,
    records: &'static str,
    expected: &'static str,
    rust: &'static str,
    python: &'static str,
    python_test: &'static str,
    js: &'static str,
    js_test: &'static str,
}

/// Why a project cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error(
        "`{0}` is not a usable processor name: use lowercase letters, digits, `-` and `_`, starting with a letter"
    )]
    BadName(String),
    #[error("{0} already exists and is not empty; pick another name or --dir")]
    Exists(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Writes a new project named `name` into `dir`; returns the files written.
pub fn create(name: &str, lang: Lang, template: Template, dir: &Path) -> Result<Vec<PathBuf>, ScaffoldError> {
    let usable = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !usable {
        return Err(ScaffoldError::BadName(name.to_string()));
    }
    if dir.read_dir().is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(ScaffoldError::Exists(dir.to_path_buf()));
    }
    let (language, source, sdk) = lang.describe();
    let own = template.files();
    let fill = |text: &str| {
        text.replace("{{about}}", own.about.trim_end())
            .replace("{{template}}", template.name())
            .replace("{{name}}", name)
            .replace("{{lang}}", language)
            .replace("{{source}}", source)
            .replace("{{sdk}}", sdk)
    };
    let mut files: Vec<(PathBuf, String)> = vec![
        ("README.md".into(), fill(include_str!("templates/README.md"))),
        ("records.jsonl".into(), own.records.into()),
        ("expected.txt".into(), own.expected.into()),
    ];
    match lang {
        Lang::Rust => {
            files.push(("Cargo.toml".into(), fill(include_str!("templates/rust/Cargo.toml"))));
            files.push(("src/lib.rs".into(), fill(own.rust)));
            files.push(("build.sh".into(), fill(include_str!("templates/rust/build.sh"))));
            files.push((
                "vendor/kinesis-processor-sdk/Cargo.toml".into(),
                include_str!("templates/rust/sdk.toml").into(),
            ));
            copy_dir(&RUST_SDK, Path::new("vendor/kinesis-processor-sdk/src"), &mut files);
            // The SDK's bindings read `../../wit` from its own folder.
            files.push(("wit/processor.wit".into(), WIT.into()));
        }
        Lang::Python => {
            files.push(("app.py".into(), fill(own.python)));
            files.push(("test_app.py".into(), fill(own.python_test)));
            files.push(("build.sh".into(), fill(include_str!("templates/python/build.sh"))));
            files.push((
                "requirements-build.txt".into(),
                include_str!("../../../plugins/sdk-python/requirements-build.txt").into(),
            ));
            copy_dir(&PYTHON_SDK, Path::new("kinesis_processor"), &mut files);
        }
        Lang::Js => {
            files.push(("app.js".into(), fill(include_str!("templates/js/app.js"))));
            files.push(("processor.js".into(), fill(own.js)));
            files.push(("processor.test.js".into(), fill(own.js_test)));
            files.push(("package.json".into(), fill(include_str!("templates/js/package.json"))));
            files.push(("build.sh".into(), fill(include_str!("templates/js/build.sh"))));
            let vendor = Path::new("vendor/kinesis-processor");
            copy_dir(&JS_SDK, &vendor.join("src"), &mut files);
            files.push((vendor.join("wit/processor.wit"), WIT.into()));
            files.push((vendor.join("build.mjs"), include_str!("../../../plugins/sdk-js/build.mjs").into()));
            files.push((vendor.join("package.json"), include_str!("../../../plugins/sdk-js/package.json").into()));
            files.push((
                vendor.join("package-lock.json"),
                include_str!("../../../plugins/sdk-js/package-lock.json").into(),
            ));
        }
    }
    let mut written = Vec::new();
    for (relative, text) in files {
        let path = dir.join(&relative);
        let write = || -> std::io::Result<()> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, &text)?;
            if relative.extension().is_some_and(|e| e == "sh") {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
            }
            Ok(())
        };
        write().map_err(|source| ScaffoldError::Write { path: path.clone(), source })?;
        written.push(path);
    }
    if lang == Lang::Js {
        // What `npm install` makes of the `file:` dependency, made now: the
        // unit tests (`node --test`) run before any install or build.
        let link = dir.join("node_modules/kinesis-processor");
        let made = std::fs::create_dir_all(dir.join("node_modules"))
            .and_then(|()| std::os::unix::fs::symlink("../vendor/kinesis-processor", &link));
        made.map_err(|source| ScaffoldError::Write { path: link.clone(), source })?;
        written.push(link);
    }
    Ok(written)
}

/// The text files of an embedded SDK folder, under `to` (no caches).
fn copy_dir(dir: &Dir<'static>, to: &Path, files: &mut Vec<(PathBuf, String)>) {
    for file in dir.files() {
        let skip = file.path().extension().is_some_and(|e| e == "pyc");
        if let (false, Some(text)) = (skip, file.contents_utf8()) {
            files.push((to.join(file.path()), text.to_string()));
        }
    }
    for sub in dir.dirs().filter(|d| !d.path().ends_with("__pycache__")) {
        copy_dir(sub, to, files);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_existing_folders_are_refused_with_what_to_do() {
        let dir = tempfile::tempdir().expect("tempdir");
        for bad in ["", "Upper", "1st", "a b", "a/b"] {
            let err = create(bad, Lang::Python, Template::Echo, &dir.path().join("x")).expect_err(bad);
            assert!(err.to_string().contains("lowercase letters"), "{err}");
        }
        std::fs::write(dir.path().join("taken"), "").expect("write");
        let err = create("ok", Lang::Rust, Template::Echo, dir.path()).expect_err("not empty");
        assert!(err.to_string().contains("already exists"), "{err}");
    }

    #[test]
    fn every_sdk_file_is_copied_in() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = create("p", Lang::Rust, Template::WindowCounter, &dir.path().join("p")).expect("create");
        let sdk: Vec<_> =
            files.iter().filter(|f| f.to_string_lossy().contains("vendor/kinesis-processor-sdk/src/")).collect();
        let expected = walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/sdk/src"));
        assert_eq!(sdk.len(), expected, "{sdk:?}");
    }

    fn walk(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .map(|entries| entries.flatten().map(|e| if e.path().is_dir() { walk(&e.path()) } else { 1 }).sum())
            .unwrap_or(0)
    }
}
