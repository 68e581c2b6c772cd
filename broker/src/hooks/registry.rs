//! Builds the plugins that `seed.toml` names, from factories the binary registers.
//!
//! The broker knows no plugin: the `seed` binary registers a factory per plugin crate it was
//! built with, and the operator's `[plugins.<name>]` tables decide which are built and how.

use std::sync::Arc;

use super::{BuiltPlugin, HookSettings, Plugin, PluginContext, PluginError};

/// Turns a plugin's own settings (its `[plugins.<name>]` table without the common keys)
/// into a running plugin.
pub type PluginFactory =
    fn(toml::Table, &mut PluginContext) -> Result<Arc<dyn Plugin>, PluginError>;

#[derive(Default, Clone)]
pub struct PluginRegistry {
    factories: Vec<(&'static str, PluginFactory)>,
}

impl PluginRegistry {
    pub fn new() -> PluginRegistry {
        PluginRegistry::default()
    }

    pub fn register(mut self, name: &'static str, factory: PluginFactory) -> PluginRegistry {
        self.factories.push((name, factory));
        self
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.factories.iter().map(|(name, _)| *name)
    }

    /// Builds every enabled plugin of a `[plugins]` table, in registration order (so that
    /// service providers come before their users). An unknown name is an error, so a typo
    /// cannot silently leave a server without its authentication.
    pub fn build(
        &self,
        plugins: &toml::Table,
        context: &mut PluginContext,
    ) -> Result<Vec<BuiltPlugin>, PluginError> {
        for name in plugins.keys() {
            self.factory(name)?;
        }
        let mut built = Vec::new();
        for (name, factory) in &self.factories {
            let Some(value) = plugins.get(*name) else { continue };
            let (settings, own) = split(name, value)?;
            if !settings.enabled {
                continue;
            }
            let plugin =
                factory(own, context).map_err(|e| PluginError(format!("plugin `{name}`: {e}")))?;
            built.push((plugin, settings));
        }
        Ok(built)
    }

    fn factory(&self, name: &str) -> Result<PluginFactory, PluginError> {
        self.factories.iter().find(|(n, _)| *n == name).map(|(_, f)| *f).ok_or_else(|| {
            let known: Vec<_> = self.names().collect();
            PluginError(format!("unknown plugin `{name}` (this build has: {})", known.join(", ")))
        })
    }
}

/// A plugin's table split into the common hook settings and the plugin's own.
pub fn split(name: &str, value: &toml::Value) -> Result<(HookSettings, toml::Table), PluginError> {
    let table = value
        .as_table()
        .cloned()
        .ok_or_else(|| PluginError(format!("[plugins.{name}] must be a table")))?;
    HookSettings::split(table).map_err(|e| PluginError(format!("[plugins.{name}]: {e}")))
}
