//! Topic administration: creating, altering, growing and deleting topics, each change atomic
//! on disk and announced to every process. Altering, growing and deleting take the admin lock;
//! creating needs none, since the rename that publishes a topic succeeds for one creator only.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use super::Catalog;
use crate::catalog::files::{self, STAGING_DIR, TOPIC_META_FILE, TOPICS_DIR, TOPICS_VERSION_AT, new_topic_id};
use crate::error::{Error, IoContext, Result};
use crate::options::{validate_topic_config, validate_topic_name};
use crate::sys::file;
use crate::sys::lock::{self, AdminLock};
use crate::topic::TopicConfig;

impl Catalog {
    /// Creates a topic (see `Queue::create_topic_with`).
    pub(crate) fn create_topic(&self, name: &str, config: TopicConfig) -> Result<()> {
        validate_topic_name(name)?;
        validate_topic_config(&config)?;
        let target = self.topic_dir(name);
        if target.exists() {
            return Err(Error::TopicExists(name.to_owned()));
        }
        let staging = self.staging_path("new");
        fs::create_dir(&staging).during("create", &staging)?;
        let staged = (|| {
            let meta = staging.join(TOPIC_META_FILE);
            file::write_synced(&meta, &files::encode_topic_meta(&config, new_topic_id()))?;
            for partition in 0..config.partitions {
                let path = staging.join(partition.to_string());
                fs::create_dir(&path).during("create", &path)?;
            }
            file::fsync_dir(&staging)?;
            // rename(2) refuses to replace a non-empty directory, so one creator wins.
            match fs::rename(&staging, &target) {
                Ok(()) => Ok(()),
                Err(e) if target.exists() => {
                    drop(e);
                    Err(Error::TopicExists(name.to_owned()))
                }
                Err(e) => Err(Error::io("rename into place", &target, e)),
            }
        })();
        if staged.is_err() {
            let _ = fs::remove_dir_all(&staging);
        }
        staged?;
        let topics = self.dir.join(TOPICS_DIR);
        file::fsync_dir(&topics)?;
        self.topics_changed();
        Ok(())
    }

    /// Changes a topic's settings (see `Queue::alter_topic`).
    pub(crate) fn alter_topic(&self, name: &str, change: impl FnOnce(TopicConfig) -> TopicConfig) -> Result<()> {
        let _admin = self.admin_lock()?;
        let (config, id) = self.read_topic_meta(name)?;
        let altered = change(config.clone());
        validate_topic_config(&altered)?;
        if altered.partitions != config.partitions {
            return Err(Error::InvalidConfig(format!(
                "alter_topic cannot change the partition count of {name:?} ({} to {}); use add_partitions",
                config.partitions, altered.partitions
            )));
        }
        self.write_topic_meta(name, &altered, id)?;
        self.topics_changed();
        Ok(())
    }

    /// Grows a topic (see `Queue::add_partitions`).
    pub(crate) fn add_partitions(&self, name: &str, partitions: u32) -> Result<()> {
        let _admin = self.admin_lock()?;
        let (config, id) = self.read_topic_meta(name)?;
        if partitions <= config.partitions {
            return Err(Error::InvalidConfig(format!(
                "topic {name:?} has {} partitions; add_partitions only grows it, not to {partitions}",
                config.partitions
            )));
        }
        let grown = TopicConfig { partitions, ..config.clone() };
        validate_topic_config(&grown)?;
        let dir = self.topic_dir(name);
        for partition in config.partitions..partitions {
            file::create_dir_durably(&self.dir, &dir.join(partition.to_string()))?;
        }
        // The directories exist before the count that makes them part of the topic.
        self.write_topic_meta(name, &grown, id)?;
        self.topics_changed();
        Ok(())
    }

    /// Deletes a topic (see `Queue::delete_topic`).
    pub(crate) fn delete_topic(&self, name: &str) -> Result<()> {
        validate_topic_name(name)?;
        let _admin = self.admin_lock()?;
        let dir = self.topic_dir(name);
        if !dir.join(TOPIC_META_FILE).exists() {
            return Err(Error::UnknownTopic(name.to_owned()));
        }
        let trash = self.staging_path("deleted");
        fs::rename(&dir, &trash).during("move away", &dir)?;
        let topics = self.dir.join(TOPICS_DIR);
        file::fsync_dir(&topics)?;
        self.topics_changed();
        self.topics.write().remove(name);
        self.forget_stale_topics();
        // Gone for everyone already; what is left is freeing the space (a crash here leaves it
        // to the next process that opens the queue alone).
        fs::remove_dir_all(&trash).during("remove", &trash)
    }

    /// A new, unique path in `staging/` for a topic being created or deleted. It does not
    /// contain the topic's name: a name of up to 249 bytes plus anything more would pass the
    /// 255 bytes a file name may have, and staging entries need no name (an opener that finds
    /// itself alone removes them all).
    fn staging_path(&self, purpose: &str) -> PathBuf {
        self.dir.join(STAGING_DIR).join(format!("{purpose}.{:016x}", new_topic_id()))
    }

    /// Tells every process that topics changed.
    fn topics_changed(&self) {
        self.shared.word64(TOPICS_VERSION_AT).fetch_add(1, Ordering::AcqRel);
    }

    /// Replaces a topic's metadata file atomically (a crash leaves the old one or the new one).
    fn write_topic_meta(&self, name: &str, config: &TopicConfig, id: u64) -> Result<()> {
        file::atomic_replace(&self.topic_dir(name).join(TOPIC_META_FILE), &files::encode_topic_meta(config, id))
    }

    /// Serialises topic changes between processes with an flock on the `topics` directory,
    /// which, unlike a lock file, nobody deletes or replaces while the queue exists.
    fn admin_lock(&self) -> Result<AdminLock> {
        lock::lock_directory(&self.dir.join(TOPICS_DIR))
    }
}
