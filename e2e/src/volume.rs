//! ConfigMap and Secret volumes laid out as the kubelet's atomic writer lays them out, in a
//! host directory the docker driver bind-mounts where the pod mounts the volume.
//!
//! The content lives in a timestamped directory (`..2026_12_06_06_34_31.1`); `..data` is a
//! symlink to it, and each file the pod sees is a symlink through `..data`
//! (`tls.crt -> ..data/tls.crt`). An update writes a new timestamped directory and repoints
//! `..data` with one rename, so a process reading the volume sees all old files or all new
//! ones, never a mix; a path it resolved once (`canonicalize`) changes with every update.

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";
/// Timestamped directories tried when one of the same name exists (two updates within the
/// clock's resolution).
const NAME_TRIES: u32 = 100;

/// How the files of one volume are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode {
    /// The volume's `defaultMode` (ConfigMaps 0644; the operator's Secrets 0440).
    pub mode: u32,
    /// The pod's `fsGroup`, which the kubelet gives the files of a Secret volume so that a
    /// non-root container can read them through a group-only mode.
    pub group: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0:?} is not a file name the docker driver models (one path component)")]
    Path(String),
    #[error("no free timestamped directory in {0} after {NAME_TRIES} tries")]
    NoName(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError + '_ {
    move |source| VolumeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `files` (file name -> content) into the volume directory `dir`, replacing what
/// an earlier call wrote there in one step (see the module documentation).
pub fn write(
    dir: &Path,
    files: &BTreeMap<String, Vec<u8>>,
    file_mode: FileMode,
) -> Result<(), VolumeError> {
    for name in files.keys() {
        let plain = Path::new(name).components().count() == 1
            && !name.starts_with("..")
            && !name.contains('/');
        if !plain {
            return Err(VolumeError::Path(name.clone()));
        }
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(io(dir))?;
    let (version, staged) = new_version_dir(dir)?;
    for (name, content) in files {
        let file = staged.join(name);
        std::fs::write(&file, content).map_err(io(&file))?;
        if let Some(group) = file_mode.group {
            std::os::unix::fs::chown(&file, Some(0), Some(group)).map_err(io(&file))?;
        }
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(file_mode.mode))
            .map_err(io(&file))?;
    }
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755))
        .map_err(io(&staged))?;

    let tmp = dir.join(DATA_TMP);
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&tmp)(e)),
    }
    symlink(&version, &tmp).map_err(io(&tmp))?;
    let data = dir.join(DATA);
    let previous = std::fs::read_link(&data).ok();
    std::fs::rename(&tmp, &data).map_err(io(&data))?;

    for name in files.keys() {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new(DATA).join(name), &link).map_err(io(&link))?;
        }
    }
    // Files the new content no longer has: their links would dangle.
    let entries = std::fs::read_dir(dir).map_err(io(dir))?;
    for entry in entries {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !files.contains_key(&name) {
            std::fs::remove_file(entry.path()).map_err(io(&entry.path()))?;
        }
    }
    if let Some(old) = previous.filter(|old| *old != Path::new(&version)) {
        let old = dir.join(old);
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
    }
    Ok(())
}

/// Creates the next `..<UTC time>.<n>` directory in `dir`.
fn new_version_dir(dir: &Path) -> Result<(String, PathBuf), VolumeError> {
    let stamp = utc_stamp(SystemTime::now());
    for n in 1..=NAME_TRIES {
        let version = format!("..{stamp}.{n}");
        let path = dir.join(&version);
        match std::fs::create_dir(&path) {
            Ok(()) => return Ok((version, path)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io(&path)(e)),
        }
    }
    Err(VolumeError::NoName(dir.to_path_buf()))
}

/// `YYYY_MM_DD_HH_MM_SS` in UTC, the kubelet's name for a volume's content directory.
fn utc_stamp(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}_{month:02}_{day:02}_{:02}_{:02}_{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn stamps_are_utc_dates() {
        assert_eq!(utc_stamp(UNIX_EPOCH), "1970_01_01_00_00_00");
        let leap = UNIX_EPOCH + std::time::Duration::from_secs(951_827_696);
        assert_eq!(utc_stamp(leap), "2000_02_29_12_34_56");
        let later = UNIX_EPOCH + std::time::Duration::from_secs(1_796_539_471);
        assert_eq!(utc_stamp(later), "2026_12_06_06_44_31");
    }

    /// An update repoints `..data`: the links stay, what they resolve to changes, the old
    /// content directory and the links of removed files are gone.
    #[test]
    fn updates_swap_the_data_link() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mode = FileMode {
            mode: 0o644,
            group: None,
        };
        write(dir.path(), &files(&[("a", "1"), ("b", "2")]), mode)?;
        let first = std::fs::canonicalize(dir.path().join("a"))?;
        assert_eq!(std::fs::read_to_string(dir.path().join("a"))?, "1");
        assert_eq!(
            std::fs::read_link(dir.path().join("a"))?,
            Path::new("..data/a")
        );
        write(dir.path(), &files(&[("a", "3")]), mode)?;
        assert_eq!(std::fs::read_to_string(dir.path().join("a"))?, "3");
        assert_ne!(std::fs::canonicalize(dir.path().join("a"))?, first);
        assert!(!first.exists(), "the old content directory is removed");
        assert!(std::fs::symlink_metadata(dir.path().join("b")).is_err());
        let versions = std::fs::read_dir(dir.path())?
            .filter_map(Result::ok)
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with("..") && name != DATA
            })
            .count();
        assert_eq!(versions, 1);
        let mode = std::fs::metadata(dir.path().join("a"))?
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
        Ok(())
    }

    #[test]
    fn nested_or_hidden_names_are_refused() {
        let dir = std::env::temp_dir().join("midge-e2e-volume-refused");
        let mode = FileMode {
            mode: 0o644,
            group: None,
        };
        for name in ["a/b", "..data", "../x"] {
            let err = write(&dir, &files(&[(name, "x")]), mode);
            assert!(matches!(err, Err(VolumeError::Path(_))), "{name}: {err:?}");
        }
    }
}
