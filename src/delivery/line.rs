//! Which queued rows a worker sends next: the pure choice over the rows it
//! holds (in queue order), their conversations and when each is due.
//!
//! Without threads a target's rows form one line: the oldest goes first and
//! a row waiting for a retry holds back every later one, so the channel
//! reads in Crisp's order. With a thread per conversation, each
//! conversation is its own line: its oldest row goes first, and one waiting
//! for a retry holds back only its own conversation. Rows without a
//! conversation (events with no session) share one line of their own.

use std::collections::HashSet;

/// One held row, as the choice needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held<'a> {
    pub conversation: Option<&'a str>,
    pub due_at_ms: i64,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Send these rows (indices into the held rows, in queue order) as one
    /// attempt.
    Send(Vec<usize>),
    /// Nothing is due: wait until this time (or new rows).
    WaitUntil(i64),
    /// No rows held.
    Empty,
}

/// The next attempt over `held` at `now_ms`. `threaded`: one line per
/// conversation. `group`: the most rows one attempt may carry — a webhook's
/// `batch` (the due rows right after the head), or with threads how many of
/// a conversation's due rows may be coalesced (its rows in order, from its
/// head, as long as each is due).
pub fn next(held: &[Held<'_>], now_ms: i64, threaded: bool, group: usize) -> Next {
    let Some(first) = held.first() else {
        return Next::Empty;
    };
    let group = group.max(1);
    if !threaded {
        if first.due_at_ms > now_ms {
            return Next::WaitUntil(first.due_at_ms);
        }
        let take = held
            .iter()
            .take(group)
            .take_while(|h| h.due_at_ms <= now_ms)
            .count();
        return Next::Send((0..take.max(1)).collect());
    }
    let mut seen: HashSet<Option<&str>> = HashSet::new();
    let mut earliest = i64::MAX;
    for (i, h) in held.iter().enumerate() {
        if !seen.insert(h.conversation) {
            continue; // not the head of its line
        }
        if h.due_at_ms > now_ms {
            earliest = earliest.min(h.due_at_ms);
            continue;
        }
        // Rows without a conversation go one by one.
        let limit = if h.conversation.is_some() { group } else { 1 };
        let rows: Vec<usize> = held[i..]
            .iter()
            .enumerate()
            .filter(|(_, r)| r.conversation == h.conversation)
            .take(limit)
            .take_while(|(_, r)| r.due_at_ms <= now_ms)
            .map(|(j, _)| i + j)
            .collect();
        return Next::Send(rows);
    }
    Next::WaitUntil(earliest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(rows: &[(Option<&'static str>, i64)]) -> Vec<Held<'static>> {
        rows.iter()
            .map(|&(conversation, due_at_ms)| Held {
                conversation,
                due_at_ms,
            })
            .collect()
    }

    /// (rows as (conversation, due), now, threaded, group) → next.
    #[test]
    fn choice_table() {
        let (a, b) = (Some("a"), Some("b"));
        /// (rows, now, threaded, group, want)
        type Case = (Vec<(Option<&'static str>, i64)>, i64, bool, usize, Next);
        let cases: Vec<Case> = vec![
            (vec![], 10, true, 5, Next::Empty),
            // One line: the head decides for everyone.
            (vec![(a, 20), (b, 0)], 10, false, 1, Next::WaitUntil(20)),
            (
                vec![(a, 0), (b, 0), (a, 30)],
                10,
                false,
                5,
                Next::Send(vec![0, 1]),
            ),
            (vec![(a, 0), (b, 0)], 10, false, 1, Next::Send(vec![0])),
            // A line per conversation: a's retry does not hold b back.
            (
                vec![(a, 20), (b, 0), (a, 0)],
                10,
                true,
                1,
                Next::Send(vec![1]),
            ),
            (
                vec![(a, 20), (b, 30), (a, 0)],
                10,
                true,
                1,
                Next::WaitUntil(20),
            ),
            // a's rows in order from its head, only while due, up to group.
            (
                vec![(a, 0), (b, 0), (a, 0), (a, 0)],
                10,
                true,
                10,
                Next::Send(vec![0, 2, 3]),
            ),
            (
                vec![(a, 0), (b, 0), (a, 0), (a, 0)],
                10,
                true,
                2,
                Next::Send(vec![0, 2]),
            ),
            (
                vec![(a, 0), (a, 50), (a, 0)],
                10,
                true,
                10,
                Next::Send(vec![0]),
            ),
            // Rows without a conversation: one line of their own, one by one.
            (
                vec![(None, 20), (a, 0), (None, 0)],
                10,
                true,
                10,
                Next::Send(vec![1]),
            ),
            (
                vec![(None, 0), (None, 0), (a, 0)],
                10,
                true,
                10,
                Next::Send(vec![0]),
            ),
        ];
        for (rows, now, threaded, group, want) in cases {
            assert_eq!(
                next(&held(&rows), now, threaded, group),
                want,
                "{rows:?} threaded {threaded} group {group}"
            );
        }
    }
}
