//! What a node's status says about it against the version in force (pure): what `eastwall
//! status` prints and the console shows.

/// A node's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// No status: not running, or it cannot reach the store (its lease expired).
    Down,
    /// It refused the latest version (the reason is in its status) and enforces an older one.
    RefusedLatest,
    /// It enforces an older version than the latest.
    Behind,
    /// It enforces the latest, but part of its node configuration waits for a restart.
    RestartNeeded,
    /// It enforces the latest version.
    Up,
}

impl NodeState {
    /// The state of a node with `status` (`None`: none under its key) when `latest` is in
    /// force.
    pub fn of(status: Option<&serde_json::Value>, latest: u64) -> NodeState {
        let Some(st) = status else {
            return NodeState::Down;
        };
        let v = st["version"].as_u64().unwrap_or(0);
        if st["problem"].is_string() {
            NodeState::RefusedLatest
        } else if v < latest {
            NodeState::Behind
        } else if st["restartNeeded"].is_string() {
            NodeState::RestartNeeded
        } else {
            NodeState::Up
        }
    }

    /// As `eastwall status` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Down => "DOWN",
            NodeState::RefusedLatest => "REFUSED-LATEST",
            NodeState::Behind => "BEHIND",
            NodeState::RestartNeeded => "RESTART-NEEDED",
            NodeState::Up => "up",
        }
    }

    /// Whether the node does not enforce the latest version as applied (drift).
    pub fn drifts(self) -> bool {
        !matches!(self, NodeState::Up | NodeState::RestartNeeded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn states() {
        let cases = [
            (None, 3, NodeState::Down),
            (Some(json!({"version": 3})), 3, NodeState::Up),
            (Some(json!({"version": 2})), 3, NodeState::Behind),
            (
                Some(json!({"version": 2, "problem": "bad"})),
                3,
                NodeState::RefusedLatest,
            ),
            (
                Some(json!({"version": 3, "restartNeeded": "udp"})),
                3,
                NodeState::RestartNeeded,
            ),
            (Some(json!({})), 1, NodeState::Behind),
        ];
        for (st, latest, want) in cases {
            assert_eq!(NodeState::of(st.as_ref(), latest), want, "{st:?}");
        }
        assert!(NodeState::Behind.drifts() && !NodeState::Up.drifts());
    }
}
