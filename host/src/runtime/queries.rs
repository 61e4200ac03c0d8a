//! Read-only views of installed packages: status, spec, logs.

use super::*;

impl Runtime {
    pub(super) fn status_of(pkg: &Pkg) -> PackageStatus {
        PackageStatus {
            name: pkg.record.spec.name.clone(),
            version: pkg.record.spec.version.clone(),
            description: pkg.record.spec.description.clone(),
            for_update: pkg.record.for_update,
            components: pkg
                .record
                .spec
                .components
                .iter()
                .filter_map(|s| pkg.comps.get(&s.id))
                .map(|c| c.status.lock().unwrap_or_else(|p| p.into_inner()).clone())
                .collect(),
        }
    }

    /// All installed packages.
    pub fn list(&self) -> Vec<PackageStatus> {
        self.pkgs().values().map(Self::status_of).collect()
    }

    /// One installed package.
    pub fn status(&self, name: &str) -> Result<PackageStatus> {
        self.pkgs()
            .get(name)
            .map(Self::status_of)
            .ok_or_else(|| RuntimeError::UnknownPackage(name.to_string()))
    }

    /// The installed package's resolved spec (sandbox grants, components).
    pub fn spec(&self, name: &str) -> Result<PackageSpec> {
        self.pkgs()
            .get(name)
            .map(|p| p.record.spec.clone())
            .ok_or_else(|| RuntimeError::UnknownPackage(name.to_string()))
    }

    /// Retained log lines of one component, oldest first.
    pub fn logs(&self, name: &str, component: &str) -> Result<Vec<LogLine>> {
        let pkgs = self.pkgs();
        let pkg = pkgs
            .get(name)
            .ok_or_else(|| RuntimeError::UnknownPackage(name.to_string()))?;
        pkg.comps
            .get(component)
            .map(|c| c.log.lines())
            .ok_or_else(|| RuntimeError::UnknownComponent {
                package: name.to_string(),
                component: component.to_string(),
            })
    }
}
