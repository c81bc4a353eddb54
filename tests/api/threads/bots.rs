//! Discord and Slack bots with `threads: per_conversation`.
