//! `host new NAME --lang rust|python|js`: a ready processor project.

use crate::scaffold::{self, Lang, Template};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use std::path::PathBuf;
use std::process::ExitCode;

/// `host new`.
#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The processor's name (lowercase letters, digits, `-`, `_`): the
    /// folder, the package and `NAME.wasm`.
    pub name: String,

    /// The language to write it in.
    #[arg(long, default_value = "rust", value_parser = lang())]
    pub lang: Lang,

    /// What it does to start with: echo (each record as text), filter
    /// (keeps records by a JSON field), window-counter (counts per key and
    /// minute, with state).
    #[arg(long, default_value = "echo", value_parser = template())]
    pub template: Template,

    /// Where to create it (default: ./NAME); must be missing or empty.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

fn lang() -> impl TypedValueParser<Value = Lang> {
    PossibleValuesParser::new(["rust", "python", "js"]).map(|s| match s.as_str() {
        "python" => Lang::Python,
        "js" => Lang::Js,
        _ => Lang::Rust,
    })
}

fn template() -> impl TypedValueParser<Value = Template> {
    PossibleValuesParser::new(Template::NAMES).map(|s| Template::named(&s).unwrap_or_default())
}

impl NewArgs {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let dir = self.dir.unwrap_or_else(|| PathBuf::from(&self.name));
        let files = scaffold::create(&self.name, self.lang, self.template, &dir)?;
        let needs = match self.lang {
            Lang::Rust => "Rust (rustup; the wasm32-wasip2 target is added on first build)",
            Lang::Python => "componentize-py (pip install componentize-py==0.25.1)",
            Lang::Js => "Node.js with npm",
        };
        eprintln!("created {} ({} files); needs {needs}", dir.display(), files.len());
        eprintln!(
            "next: cd {} && ./build.sh && host test --plugin {}.wasm --input records.jsonl --expect expected.txt",
            dir.display(),
            self.name
        );
        Ok(ExitCode::SUCCESS)
    }
}
