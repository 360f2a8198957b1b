//! `config check|default` and `tools`.

use serde_json::Value;

use super::args::{ConfigAction, ToolsFormat};
use super::call::pretty;
use super::{EXIT_USAGE, write_stdout};
use crate::config::{self, Config};
use crate::tools;

pub(super) fn config_command(action: &ConfigAction) -> u8 {
    match action {
        ConfigAction::Default => write_stdout(config::DEFAULT_YAML),
        ConfigAction::Check { file } => match Config::load(Some(file)) {
            Ok(_) => {
                let text = std::fs::read_to_string(file).unwrap_or_default();
                let reserved = Config::reserved_keys_set(&text);
                let mut msg = format!("{}: valid\n", file.display());
                for key in reserved {
                    msg.push_str(&format!(
                        "note: `{key}` is accepted but not in effect in this version\n"
                    ));
                }
                write_stdout(&msg)
            }
            Err(e) => {
                eprintln!("ebpf-mcp: {e}");
                EXIT_USAGE
            }
        },
    }
}

pub(super) fn tools_command(config: &Config, output: ToolsFormat) -> u8 {
    let registry = tools::registry();
    match output {
        ToolsFormat::Table => {
            let width = registry
                .all()
                .iter()
                .map(|t| t.name.len())
                .max()
                .unwrap_or(4);
            let mut text = String::new();
            for t in registry.all() {
                let state = if t.enabled(config) { "" } else { " (disabled)" };
                let first_sentence = t.description.split(". ").next().unwrap_or(t.description);
                text.push_str(&format!(
                    "{:width$}  {:6}  {}{state}\n",
                    t.name,
                    t.tier.as_str(),
                    first_sentence.trim_end_matches('.'),
                ));
            }
            write_stdout(&text)
        }
        ToolsFormat::Json => {
            let list: Vec<Value> = registry
                .all()
                .iter()
                .map(|t| {
                    serde_json::json!({
                        "name": t.name,
                        "title": t.title,
                        "tier": t.tier,
                        "enabled": t.enabled(config),
                        "description": t.description,
                        "inputSchema": t.input_schema,
                        "outputSchema": t.output_schema,
                    })
                })
                .collect();
            write_stdout(&format!("{}\n", pretty(&Value::Array(list))))
        }
        ToolsFormat::Markdown => write_stdout(&crate::docs::markdown(registry)),
    }
}
