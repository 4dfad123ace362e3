//! Getting lines to users: one encoding per format for a room's audience
//! (never one per recipient), lines to one user, history replayed to a
//! newcomer, and large rooms' joins summarised once a second.

use super::*;

impl Chat {
    /// Sends `line` to the chosen members of `room`, encoding it once per
    /// format actually needed.
    pub(super) fn to_room(
        &self,
        room: usize,
        line: &Line<'_>,
        audience: Audience,
        cx: &mut impl Context,
    ) {
        self.to_room_with(room, line, audience, None, cx);
    }

    /// [`Chat::to_room`], with the plain-text message already made.
    pub(super) fn to_room_with(
        &self,
        room: usize,
        line: &Line<'_>,
        audience: Audience,
        plain: Option<&Outgoing>,
        cx: &mut impl Context,
    ) {
        let ts = cx.clock().unix_ms;
        self.to_room_at(room, line, audience, plain, ts, cx);
    }

    /// [`Chat::to_room_with`] for an event that happened at `ts` (a
    /// message from another node carries its own time).
    pub(super) fn to_room_at(
        &self,
        room: usize,
        line: &Line<'_>,
        audience: Audience,
        plain: Option<&Outgoing>,
        ts: u64,
        cx: &mut impl Context,
    ) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        for (json, list) in [(false, &r.plain), (true, &r.json)] {
            let skip = match audience {
                Audience::All => None,
                Audience::Others(id) => Some(id),
                Audience::OthersUnlessJson(id) => (!json).then_some(id),
            };
            // Encode nothing when nobody would receive it.
            if list.is_empty() || (list.len() == 1 && Some(list[0]) == skip) {
                continue;
            }
            let message = match plain {
                Some(message) if !json => message.clone(),
                _ => encode(line, &r.name, json, ts, cx),
            };
            for &member in list {
                if Some(member) != skip {
                    cx.deliver(member, &message);
                }
            }
        }
    }

    /// Sends `line`, which happened at `ts`, to one user in its format;
    /// returns the bytes it costs on the wire.
    pub(super) fn to_user_at(
        &self,
        id: PeerId,
        line: &Line<'_>,
        ts: u64,
        cx: &mut impl Context,
    ) -> usize {
        let Some(user) = self.users.get(id) else {
            return 0;
        };
        let room = self.rooms.get(user.room()).map_or("", |r| r.name.as_str());
        let message = encode(line, room, user.json, ts, cx);
        cx.deliver(id, &message);
        message.wire_len()
    }

    /// Sends `line`, happening now, to one user; returns its wire size.
    pub(super) fn to_user(&self, id: PeerId, line: &Line<'_>, cx: &mut impl Context) -> usize {
        self.to_user_at(id, line, cx.clock().unix_ms, cx)
    }

    pub(super) fn system(
        &self,
        id: PeerId,
        text: &str,
        extra: Extra<'_>,
        cx: &mut impl Context,
    ) -> usize {
        self.to_user(id, &Line::System { text, extra }, cx)
    }

    pub(super) fn error(&self, id: PeerId, text: &str, cx: &mut impl Context) {
        self.to_user(id, &Line::Error { text }, cx);
    }

    /// Replays history to a newcomer: everything held, or what came after
    /// `since`, saying plainly when some of it is gone.
    /// `skip` leaves out messages the newcomer already has.
    pub(super) fn replay(
        &self,
        id: PeerId,
        room: usize,
        since: Option<u64>,
        skip: &dyn Fn(u64) -> bool,
        cx: &mut impl Context,
    ) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let entries: Vec<&Entry> = match since {
            Some(since) if since > r.last_seq => {
                let note = format!(
                    "seq {since} is ahead of this room (its last is {}): the server may have restarted; replaying all it holds",
                    r.last_seq
                );
                self.system(id, &note, Extra::None, cx);
                r.history.all().collect()
            }
            Some(since) => {
                let replay = r.history.since(since, r.last_seq);
                if let Some((first_missed, first_held)) = replay.gap {
                    let note = format!(
                        "history no longer holds messages {first_missed} to {}; replaying from {first_held}",
                        first_held - 1
                    );
                    self.system(id, &note, Extra::None, cx);
                }
                replay.entries
            }
            None => r.history.all().collect(),
        };
        let json = self.users.get(id).is_some_and(|u| u.json);
        for e in entries {
            if skip(e.seq) {
                continue;
            }
            if !json {
                // Plain clients get the very message sent live.
                cx.deliver(id, &e.plain);
                continue;
            }
            let line = Line::Message {
                from: &e.from,
                text: &e.text,
                seq: e.seq,
                me: e.me,
                history: true,
                verified: e.verified,
            };
            self.to_user_at(id, &line, e.ts, cx);
        }
    }

    /// Tells the room that `name` joined or left: a line to each other
    /// member in a room up to the announce limit (the seed's behaviour),
    /// counted into a summary above it. `size` is the room's size with
    /// the user in it.
    pub(super) fn announce(
        &mut self,
        room: usize,
        change: Change,
        name: &str,
        id: PeerId,
        size: usize,
        cx: &mut impl Context,
    ) {
        let now = cx.clock().now;
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        if size <= self.config.announce_limit {
            // Back to single lines: what was counted is told first (the
            // count still has the one the line is about).
            if r.presence.is_pending() {
                self.summarise(room, size, cx);
            }
            let line = match change {
                Change::Join => Line::Join { from: name },
                Change::Leave => Line::Leave { from: name },
            };
            self.to_room(room, &line, Audience::Others(id), cx);
            return;
        }
        if r.presence.record(change == Change::Join, now) {
            let count = r.len();
            self.summarise(room, count, cx);
        } else if !r.presence.scheduled {
            r.presence.scheduled = true;
            let at = r.presence.due_at().unwrap_or(now);
            self.due.add(room, at);
        }
    }

    /// Sends the room its waiting presence summary, if any, saying that
    /// `count` are in the room.
    pub(super) fn summarise(&mut self, room: usize, count: usize, cx: &mut impl Context) {
        let now = cx.clock().now;
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        let Some((joined, left)) = r.presence.take(now) else {
            return;
        };
        let line = Line::Presence {
            joined,
            left,
            count,
        };
        self.to_room(room, &line, Audience::All, cx);
    }

    /// Sends the summaries whose period has ended. Called as each event
    /// begins: the service's tick has no context to deliver with.
    pub(super) fn summarise_due(&mut self, cx: &mut impl Context) {
        let now = cx.clock().now;
        let Some(mut waiting) = self.due.take(now) else {
            return;
        };
        waiting.retain(|&room| {
            let Some(r) = self.rooms.get_mut(room) else {
                return false;
            };
            if !r.presence.scheduled {
                return false;
            }
            if !r.presence.may_send(now) {
                let at = r.presence.due_at().unwrap_or(now);
                self.due.keep_for(at);
                return true;
            }
            r.presence.scheduled = false;
            let count = r.len();
            self.summarise(room, count, cx);
            false
        });
        self.due.put_back(waiting);
    }
}
