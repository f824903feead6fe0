//! The descriptor limit: the server and the load generator each raise the soft
//! RLIMIT_NOFILE to the hard limit at start, as nginx's `worker_rlimit_nofile` and
//! Redis's `adjustOpenFilesLimit` do, and size themselves by what is in force.

/// Raises the soft RLIMIT_NOFILE to the hard limit and returns the soft limit in force;
/// if it cannot be raised, logs why and returns the limit as it is (None if even that
/// cannot be read).
pub fn raise() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(e) => {
            log::warn!("cannot raise the descriptor limit: {e}");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .ok()
                .map(|(soft, _)| soft)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_limit_in_force_is_at_least_the_soft_limit_before() {
        let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
        let now = super::raise().expect("the limit can be read");
        assert!(now >= soft && now <= hard, "{soft} <= {now} <= {hard}");
    }
}
