//! Pipeline definitions (DMS-REQ-0305, 0306): a YAML file lists the tasks in order, each
//! with a label, a class and its configuration; `--set label.key=value` overrides any
//! setting from the command line. Everything is checked before a run starts: the file's
//! shape, each task's configuration (unknown keys, wrong types, values out of range), the
//! order of the tasks, and every override's target.
use std::path::Path;

use anyhow::{Context, Result, bail};
use aster_processing::characterize::CharacterizeConfig;
use aster_processing::detection::DetectionConfig;
use aster_processing::isr::IsrConfig;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineFile {
    description: String,
    /// Name of the run: outputs go to runs/<run>/.
    run: String,
    /// Whether the processed visit images are kept (default) or, once recorded with their
    /// provenance, deleted to be regenerated on request (DMS-REQ-0311).
    #[serde(default = "keep_by_default")]
    keep_calexps: bool,
    tasks: Vec<TaskEntry>,
}

fn keep_by_default() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskEntry {
    label: String,
    class: String,
    #[serde(default)]
    config: serde_yaml::Value,
}

/// Where the run's catalogs go in the catalog store.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogsConfig {
    pub source_table: String,
    pub visit_table: String,
    pub ccd_visit_table: String,
}

impl Default for CatalogsConfig {
    fn default() -> Self {
        Self {
            source_table: "dp.Source".into(),
            visit_table: "dp.Visit".into(),
            ccd_visit_table: "dp.CcdVisit".into(),
        }
    }
}

/// A task with its validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub enum Task {
    Isr(IsrConfig),
    Characterize(CharacterizeConfig),
    Measure(DetectionConfig),
    Catalogs(CatalogsConfig),
}

impl Task {
    fn class(&self) -> &'static str {
        match self {
            Self::Isr(_) => "isr",
            Self::Characterize(_) => "characterize",
            Self::Measure(_) => "measure",
            Self::Catalogs(_) => "catalogs",
        }
    }
}

/// A validated pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    pub description: String,
    pub run: String,
    pub keep_calexps: bool,
    pub tasks: Vec<(String, Task)>,
}

impl Pipeline {
    pub fn isr(&self) -> Option<&IsrConfig> {
        self.tasks.iter().find_map(|(_, t)| match t {
            Task::Isr(c) => Some(c),
            _ => None,
        })
    }
    pub fn characterize(&self) -> Option<&CharacterizeConfig> {
        self.tasks.iter().find_map(|(_, t)| match t {
            Task::Characterize(c) => Some(c),
            _ => None,
        })
    }
    pub fn measure(&self) -> Option<&DetectionConfig> {
        self.tasks.iter().find_map(|(_, t)| match t {
            Task::Measure(c) => Some(c),
            _ => None,
        })
    }
    pub fn catalogs(&self) -> Option<&CatalogsConfig> {
        self.tasks.iter().find_map(|(_, t)| match t {
            Task::Catalogs(c) => Some(c),
            _ => None,
        })
    }
}

impl Pipeline {
    /// The pipeline as a definition document (JSON, which is YAML too): what provenance
    /// records, and what [`parse`] reads back to run it again.
    pub fn to_json(&self) -> serde_json::Value {
        let tasks: Vec<serde_json::Value> = self
            .tasks
            .iter()
            .map(|(label, task)| {
                let config = match task {
                    Task::Isr(c) => serde_json::to_value(c),
                    Task::Characterize(c) => serde_json::to_value(c),
                    Task::Measure(c) => serde_json::to_value(c),
                    Task::Catalogs(c) => serde_json::to_value(c),
                }
                .expect("configurations serialize");
                serde_json::json!({"label": label, "class": task.class(), "config": config})
            })
            .collect();
        serde_json::json!({
            "description": self.description,
            "run": self.run,
            "keep_calexps": self.keep_calexps,
            "tasks": tasks,
        })
    }
}

/// Reads and validates the pipeline at `path` with `overrides` (`label.key=value`).
pub fn load(path: &Path, overrides: &[String]) -> Result<Pipeline> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text, overrides).with_context(|| format!("pipeline {}", path.display()))
}

pub fn parse(text: &str, overrides: &[String]) -> Result<Pipeline> {
    let mut file: PipelineFile = serde_yaml::from_str(text).context("not a pipeline definition")?;
    if file.run.is_empty()
        || !file
            .run
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        bail!("run '{}': use letters, digits, - and _", file.run);
    }
    for o in overrides {
        let (target, value) = o
            .split_once('=')
            .with_context(|| format!("--set {o}: expected label.key=value"))?;
        let (label, key) = target
            .split_once('.')
            .with_context(|| format!("--set {o}: expected label.key=value"))?;
        let task = file
            .tasks
            .iter_mut()
            .find(|t| t.label == label)
            .with_context(|| format!("--set {o}: no task labelled '{label}'"))?;
        let value: serde_yaml::Value = serde_yaml::from_str(value)
            .with_context(|| format!("--set {o}: '{value}' is not a value"))?;
        if task.config.is_null() {
            task.config = serde_yaml::Value::Mapping(Default::default());
        }
        let map = task
            .config
            .as_mapping_mut()
            .with_context(|| format!("task '{label}': config must be a mapping"))?;
        map.insert(serde_yaml::Value::String(key.to_string()), value);
    }
    let mut tasks = Vec::new();
    for t in file.tasks {
        let config = match t.config {
            serde_yaml::Value::Null => serde_yaml::Value::Mapping(Default::default()),
            c => c,
        };
        let what = |e: serde_yaml::Error| anyhow::anyhow!("task '{}' ({}): {e}", t.label, t.class);
        let checked = |r: Result<(), String>| {
            r.map_err(|e| anyhow::anyhow!("task '{}' ({}): {e}", t.label, t.class))
        };
        let task = match t.class.as_str() {
            "isr" => {
                let c: IsrConfig = serde_yaml::from_value(config).map_err(what)?;
                checked(c.validate())?;
                Task::Isr(c)
            }
            "characterize" => {
                let c: CharacterizeConfig = serde_yaml::from_value(config).map_err(what)?;
                checked(c.validate())?;
                Task::Characterize(c)
            }
            "measure" => {
                let c: DetectionConfig = serde_yaml::from_value(config).map_err(what)?;
                checked(c.validate())?;
                Task::Measure(c)
            }
            "catalogs" => {
                let c: CatalogsConfig = serde_yaml::from_value(config).map_err(what)?;
                for name in [&c.source_table, &c.visit_table, &c.ccd_visit_table] {
                    if name
                        .split_once('.')
                        .is_none_or(|(s, t)| s.is_empty() || t.is_empty())
                    {
                        bail!(
                            "task '{}' (catalogs): '{name}' is not schema.table",
                            t.label
                        );
                    }
                }
                Task::Catalogs(c)
            }
            other => bail!(
                "task '{}': unknown class '{other}' (isr, characterize, measure, catalogs)",
                t.label
            ),
        };
        if tasks.iter().any(|(l, _): &(String, Task)| *l == t.label) {
            bail!("two tasks are labelled '{}'", t.label);
        }
        tasks.push((t.label, task));
    }
    // Each task needs what the ones before it make.
    let order = ["isr", "characterize", "measure", "catalogs"];
    let classes: Vec<&str> = tasks.iter().map(|(_, t)| t.class()).collect();
    // The catalogs task may be left out: the images and per-CCD source tables are still
    // written and recorded, and the catalog store is left as it is.
    if classes != order && classes != order[..3] {
        bail!(
            "tasks run as {}; this pipeline needs exactly {} in that order (catalogs optional)",
            classes.join(" -> "),
            order.join(" -> ")
        );
    }
    Ok(Pipeline {
        description: file.description,
        run: file.run,
        keep_calexps: file.keep_calexps,
        tasks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = include_str!("../../pipelines/single-visit.yaml");

    #[test]
    fn the_shipped_pipeline_parses_and_overrides_apply() {
        let p = parse(FILE, &[]).unwrap();
        assert_eq!(p.run, "single-visit");
        assert_eq!(p.characterize().unwrap().psf_order, 2);
        let p = parse(
            FILE,
            &["characterize.psf_order=1".into(), "isr.fringe=false".into()],
        )
        .unwrap();
        assert_eq!(p.characterize().unwrap().psf_order, 1);
        assert!(!p.isr().unwrap().fringe);
    }

    #[test]
    fn mistakes_are_caught_before_running() {
        for (overrides, expect) in [
            (vec!["characterize.psf_ordr=1"], "unknown field `psf_ordr`"),
            (vec!["characterize.psf_order=9"], "psf_order 9 is over 4"),
            (
                vec!["measure.threshold=-1"],
                "threshold -1 must be positive",
            ),
            (vec!["isr.fringe=maybe"], "invalid type"),
            (vec!["nosuch.x=1"], "no task labelled 'nosuch'"),
            (vec!["isr"], "expected label.key=value"),
        ] {
            let overrides: Vec<String> = overrides.into_iter().map(String::from).collect();
            let err = format!("{:#}", parse(FILE, &overrides).unwrap_err());
            assert!(err.contains(expect), "{err}");
        }
        let swapped = FILE.replace("class: isr", "class: measurex");
        assert!(
            format!("{:#}", parse(&swapped, &[]).unwrap_err()).contains("unknown class 'measurex'")
        );
        let reordered = "description: x\nrun: r\ntasks:\n  - {label: m, class: measure}\n  - {label: i, class: isr}\n";
        assert!(format!("{:#}", parse(reordered, &[]).unwrap_err()).contains("in that order"));
    }
}
