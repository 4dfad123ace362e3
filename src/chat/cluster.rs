//! What other nodes said: the bus's events applied to this node's rooms
//! and users (remote messages, rosters, seeded history, epochs, reachability,
//! messages Redis did not confirm), and this node's events encoded for them.
//! Only in cluster mode; a single node's [`LocalBus`](crate::cluster::bus::LocalBus) brings none.

use super::*;
use crate::cluster::throttle::Throttle;

/// What this node knows of the others' side, apart from any one room.
#[derive(Debug, Default)]
pub(super) struct Others {
    /// The rooms were told that other nodes are out of reach.
    told_unreachable: bool,
    /// Events another node (or another program on the same Redis) sent in
    /// a form this release does not read: dropped and counted
    /// (`wschat_relay_undecodable`)...
    pub undecodable: u64,
    /// ...and said at most once per
    /// [`throttle::EVERY`](crate::cluster::throttle::EVERY), as others
    /// decide how many come.
    undecodable_warning: Throttle,
}

impl Chat {
    /// Carries an event of `room` to the other nodes (nothing alone).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn relay(
        &mut self,
        room: usize,
        kind: relay::Kind,
        peer: PeerId,
        me: bool,
        from: &str,
        body: &[u8],
        cx: &mut impl Context,
    ) -> Publish {
        let (Some(node), Some(r)) = (&self.node, self.rooms.get(room)) else {
            return Publish::Local;
        };
        let clock = cx.clock();
        let verified = self.users.get(peer).is_some_and(User::is_verified);
        let joined = Presence::Joined { verified };
        match kind {
            relay::Kind::Join => self.bus.presence(clock.now, &r.name, from, joined),
            relay::Kind::Leave => {
                self.bus.presence(clock.now, &r.name, from, Presence::Left);
                let keys = names::keys(from);
                self.bus.release_name(clock.now, &r.name, &keys, from);
            }
            relay::Kind::Nick => {
                self.bus.presence(clock.now, &r.name, from, Presence::Left);
                let to = std::str::from_utf8(body).unwrap_or_default();
                self.bus.presence(clock.now, &r.name, to, joined);
            }
            relay::Kind::Resumed => self.bus.presence(clock.now, &r.name, from, joined),
            relay::Kind::Message
            | relay::Kind::Binary
            | relay::Kind::Private
            | relay::Kind::Taken => {}
        }
        let bytes = Relayed {
            kind,
            node,
            peer,
            ts: clock.unix_ms,
            me,
            verified,
            from,
            body,
        }
        .encode();
        self.bus
            .publish(clock.now, &r.name, &bytes, kind == relay::Kind::Message)
    }

    /// What other nodes said, and whether they can be reached.
    pub(super) fn on_bus(&mut self, cx: &mut impl Context) {
        let now = cx.clock().now;
        while let Some(event) = self.bus.poll_event(now) {
            match event {
                BusEvent::Remote {
                    room,
                    seq,
                    epoch,
                    event,
                } => {
                    if seq > 0 && !self.same_epoch(&room, &epoch, cx) {
                        continue;
                    }
                    self.remote(&room, seq, &event, cx);
                }
                BusEvent::History {
                    room,
                    epoch,
                    entries,
                } => self.seed(&room, epoch, entries, cx),
                BusEvent::Roster { room, members } => self.roster(&room, &members, cx),
                BusEvent::Claimed { ticket, holder } => self.claimed(ticket, holder, cx),
                BusEvent::Taken { room, name, from } => self.taken(&room, &name, &from, cx),
                BusEvent::Resume { ticket, record } => {
                    let record = record.as_deref().and_then(decode_record);
                    self.resume_answered(ticket, record, cx);
                }
                BusEvent::Unconfirmed { room, event, .. } => self.unconfirmed(&room, &event, cx),
                BusEvent::Rooms {
                    ticket,
                    rooms,
                    total,
                    complete,
                } => {
                    if self.read_waits_for(ticket) {
                        self.read_listed(ticket, rooms, total, complete, cx);
                    } else {
                        self.rooms_answered(ticket, rooms, total, complete, cx);
                    }
                }
                BusEvent::Room { ticket, state } => self.read_room_answered(ticket, state, cx),
                BusEvent::Lost { ticket } => {
                    self.post_answered(ticket, None, cx);
                    self.read_lost(ticket, cx);
                    self.resume_answered(ticket, None, cx);
                    if let Some((_, id)) = take_first(&mut self.pending.listings, |l| l.0 == ticket)
                    {
                        self.local_rooms(id, Some(listing::NOT_ANSWERED), cx);
                    }
                    if let Some(claim) =
                        take_first(&mut self.pending.claims, |c| c.ticket == ticket)
                    {
                        let text = "your name change could not be checked across nodes; try again";
                        self.error(claim.id, text, cx);
                    }
                }
                BusEvent::Reachable(reachable) => {
                    if !reachable {
                        self.stop_seeding(cx);
                    }
                    self.reachability(reachable, cx);
                }
                BusEvent::Sequenced { ticket, seq, .. } => {
                    self.post_answered(ticket, Some(seq), cx);
                }
                BusEvent::Member { .. } => {}
            }
        }
    }

    /// A presence listing of `room`: members of other nodes no longer
    /// listed for a while are gone (their node died, or their leave was
    /// missed), and the room is told.
    pub(super) fn roster(
        &mut self,
        room_name: &str,
        members: &[roster::Listed],
        cx: &mut impl Context,
    ) {
        let now = cx.clock().now;
        let Some(room) = self.rooms.index_of(room_name) else {
            return;
        };
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        let gone = r.remote.listed(members, now);
        for name in gone {
            let Some(r) = self.rooms.get(room) else {
                return;
            };
            let size = r.len() + r.remote.len() + 1;
            self.announce(room, Change::Leave, &name, PeerId::MAX, size, cx);
        }
    }

    /// Redis gave `room`'s verified `name` to its user here, taking it
    /// from `from` (node, name): each holder on another node is told
    /// through its node (a relayed `t` event), which renames it as one
    /// node does (see `unname`). Holders here were renamed at the join.
    pub(super) fn taken(
        &mut self,
        room_name: &str,
        name: &str,
        from: &[(String, String)],
        cx: &mut impl Context,
    ) {
        let Some(room) = self.rooms.index_of(room_name) else {
            return;
        };
        let Some(Holder::User(id)) = self
            .rooms
            .get(room)
            .and_then(|r| r.names.holder(&names::keys(name)))
        else {
            return;
        };
        // Still its verified user (not gone meanwhile).
        let Some(user) = self.users.get(id) else {
            return;
        };
        if !user.is_verified() || user.name.as_deref() != Some(name) {
            return;
        }
        for (node, holder) in from {
            if self.node.as_deref() == Some(node.as_str()) {
                continue;
            }
            let body = relay::taken_body(node, holder);
            self.relay(room, relay::Kind::Taken, id, false, name, &body, cx);
        }
    }

    /// Tells every room once that other nodes went out of reach, and
    /// once that they are back.
    pub(super) fn reachability(&mut self, reachable: bool, cx: &mut impl Context) {
        if reachable != self.others.told_unreachable {
            return;
        }
        self.others.told_unreachable = !reachable;
        let text = if reachable {
            "other nodes are back in reach: chat spans every node again (what they said meanwhile is not shown here)"
        } else {
            "other nodes are out of reach: messages here reach this node only, and are not kept in the shared history"
        };
        let rooms: Vec<usize> = self.rooms.indices().collect();
        for room in rooms {
            let line = Line::System {
                text,
                extra: Extra::None,
            };
            self.to_room(room, &line, Audience::All, cx);
        }
    }

    /// Whether `epoch` is the one `room` had (or the first heard). When
    /// it changed, Redis lost the room's numbering: what is held here is
    /// dropped and the room told plainly, as after a restart. False when
    /// the room does not exist here.
    pub(super) fn same_epoch(
        &mut self,
        room_name: &str,
        epoch: &str,
        cx: &mut impl Context,
    ) -> bool {
        let Some(room) = self.rooms.index_of(room_name) else {
            return false;
        };
        let Some(r) = self.rooms.get_mut(room) else {
            return false;
        };
        match r.epoch.as_deref() {
            Some(held) if held == epoch => return true,
            None => {
                r.epoch = Some(epoch.into());
                return true;
            }
            Some(_) => {}
        }
        r.epoch = Some(epoch.into());
        r.history = history::History::default();
        r.last_seq = 0;
        let line = Line::System {
            text: "this room's shared history was lost (Redis restarted without it): numbering starts over",
            extra: Extra::None,
        };
        self.to_room(room, &line, Audience::All, cx);
        true
    }

    /// The room's shared history came from Redis: merged with what is
    /// held here, and replayed to those who joined while it was on its
    /// way (minus what they were delivered live meanwhile).
    pub(super) fn seed(
        &mut self,
        room_name: &str,
        epoch: Option<String>,
        entries: Vec<(u64, Vec<u8>)>,
        cx: &mut impl Context,
    ) {
        if let Some(epoch) = &epoch {
            if !self.same_epoch(room_name, epoch, cx) {
                return;
            }
        }
        let Some(room) = self.rooms.index_of(room_name) else {
            return;
        };
        let bounds = self.config.history;
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        let waiting = r.seeding.take();
        let live = r.history.seqs();
        // Only a room new here takes numbers past its own: on an old one,
        // those will come as pushes (everything published after the
        // subscription was confirmed does), or were said while this node
        // was cut off and are not shown (the room was told).
        let upto = match waiting {
            Some(_) => u64::MAX,
            None => r.last_seq,
        };
        let mut merged = Vec::with_capacity(entries.len());
        for (seq, bytes) in entries {
            if seq > upto || live.binary_search(&seq).is_ok() {
                continue;
            }
            let Some(event) = relay::decode(&bytes).filter(|e| e.kind == relay::Kind::Message)
            else {
                continue;
            };
            let Ok(text) = std::str::from_utf8(event.body) else {
                continue;
            };
            let from: Rc<str> = Rc::from(event.from);
            let line = Line::Message {
                from: &from,
                text,
                seq,
                me: event.me,
                history: false,
                verified: event.verified,
            };
            let scan = render::scan(text);
            let plain = encode(&line, &r.name, false, event.ts, cx);
            merged.push(
                Entry::new(
                    seq,
                    event.ts,
                    Rc::clone(&from),
                    text,
                    event.me,
                    plain,
                    scan.json_extra,
                )
                .by_verified(event.verified),
            );
        }
        if let Some(last) = merged.last().map(|e| e.seq) {
            r.last_seq = r.last_seq.max(last);
        }
        r.history.merge(merged, bounds);
        for w in waiting.unwrap_or_default() {
            if self.users.get(w.id).is_some_and(|u| u.room() == room) {
                // Delivered live after it joined: not again.
                let skip = |seq: u64| seq > w.upto && live.binary_search(&seq).is_ok();
                self.replay(w.id, room, w.since, &skip, cx);
            }
        }
    }

    /// Redis is out of reach: rooms waiting for their history replay
    /// what is held here instead.
    pub(super) fn stop_seeding(&mut self, cx: &mut impl Context) {
        let rooms: Vec<usize> = self.rooms.indices().collect();
        for room in rooms {
            let Some(r) = self.rooms.get_mut(room) else {
                continue;
            };
            let Some(waiting) = r.seeding.take() else {
                continue;
            };
            for w in waiting {
                if self.users.get(w.id).is_some_and(|u| u.room() == room) {
                    self.replay(w.id, room, w.since, &|seq| seq > w.upto, cx);
                }
            }
        }
    }

    /// An event of `room` that is not of the relay encoding (another
    /// release, another program): dropped, counted, said now and then.
    fn undecodable(&mut self, room: &str, now: Instant) {
        let others = &mut self.others;
        others.undecodable += 1;
        if let Some(held) = others.undecodable_warning.allow(now) {
            warn!("an event in {room} from another node is not of this release's encoding: dropped{held}");
        }
    }

    /// An event of `room` from the bus (another node's, or our own
    /// sequenced message coming back in the room's order).
    pub(super) fn remote(
        &mut self,
        room_name: &str,
        seq: u64,
        bytes: &[u8],
        cx: &mut impl Context,
    ) {
        let Some(event) = relay::decode(bytes) else {
            return self.undecodable(room_name, cx.clock().now);
        };
        let Some(room) = self.rooms.index_of(room_name) else {
            return;
        };
        let ours = self.node.as_deref() == Some(event.node);
        match event.kind {
            relay::Kind::Message => {
                let Ok(text) = std::str::from_utf8(event.body) else {
                    return;
                };
                let Some(r) = self.rooms.get(room) else {
                    return;
                };
                if seq == 0 || (seq <= r.last_seq && r.history.contains(seq)) {
                    // Fetched with the room's history already.
                    return;
                }
                // Our own: its sender still here does not hear it back.
                let audience = match self.users.get(event.peer) {
                    Some(user) if ours && user.room() == room => {
                        Audience::OthersUnlessJson(event.peer)
                    }
                    _ => Audience::All,
                };
                let from: Rc<str> = Rc::from(event.from);
                let flags = (event.me, event.verified);
                self.message(room, from, text, flags, seq, event.ts, audience, true, cx);
            }
            // Our own joins, leaves and nick changes were told here already.
            _ if ours => {}
            relay::Kind::Join | relay::Kind::Leave => {
                let now = cx.clock().now;
                let Some(r) = self.rooms.get_mut(room) else {
                    return;
                };
                let change = match event.kind {
                    relay::Kind::Join => {
                        r.remote.joined(event.node, event.from, event.verified, now);
                        Change::Join
                    }
                    _ => {
                        r.remote.left(event.node, event.from, now);
                        Change::Leave
                    }
                };
                let size = r.len() + r.remote.len() + usize::from(change == Change::Leave);
                self.announce(room, change, event.from, PeerId::MAX, size, cx);
            }
            relay::Kind::Nick => {
                let Ok(to) = std::str::from_utf8(event.body) else {
                    return;
                };
                let now = cx.clock().now;
                if let Some(r) = self.rooms.get_mut(room) {
                    r.remote.left(event.node, event.from, now);
                    r.remote.joined(event.node, to, event.verified, now);
                }
                let line = Line::Nick {
                    from: event.from,
                    to,
                };
                self.to_room(room, &line, Audience::All, cx);
            }
            relay::Kind::Private => {
                let Some((to, text)) = relay::parse_private(event.body) else {
                    return;
                };
                let Ok(recipient) = self.find(room, to) else {
                    return;
                };
                let line = Line::Private {
                    from: event.from,
                    to,
                    text,
                    sent: false,
                };
                self.to_user_at(recipient, &line, event.ts, cx);
            }
            relay::Kind::Taken => {
                let Some((node, holder)) = relay::parse_taken(event.body) else {
                    return;
                };
                if self.node.as_deref() != Some(node) {
                    return;
                }
                let keys = names::keys(holder);
                let Some(r) = self.rooms.get_mut(room) else {
                    return;
                };
                match r.names.holder(&keys) {
                    Some(Holder::User(id))
                        if self
                            .users
                            .get(id)
                            .is_some_and(|u| u.name.as_deref() == Some(holder)) =>
                    {
                        self.unname(id, room, event.from, cx);
                    }
                    Some(Holder::Away(departure)) => r.names.remove(&keys, Holder::Away(departure)),
                    _ => {}
                }
            }
            relay::Kind::Resumed => {
                let Some((old_node, digest)) = relay::parse_resumed(event.body) else {
                    return;
                };
                let now = cx.clock().now;
                if let Some(r) = self.rooms.get_mut(room) {
                    r.remote.left(old_node, event.from, now);
                    r.remote.joined(event.node, event.from, event.verified, now);
                }
                if self.node.as_deref() == Some(old_node) {
                    self.resumed_elsewhere(room, digest, cx);
                }
            }
            relay::Kind::Binary => {
                let Some(r) = self.rooms.get(room) else {
                    return;
                };
                if !r.is_empty() {
                    let message = cx.encode(Kind::Binary, &[event.body]);
                    r.members().for_each(|m| cx.deliver(m, &message));
                }
            }
        }
    }

    /// Our own message Redis did not confirm (see
    /// [`BusEvent::Unconfirmed`]): this node will not hear it back, so it
    /// is delivered here now, unnumbered and not kept in history (as when
    /// other nodes are out of reach), and its sender is told that other
    /// nodes may not have it.
    pub(super) fn unconfirmed(&mut self, room_name: &str, bytes: &[u8], cx: &mut impl Context) {
        let Some(event) = relay::decode(bytes).filter(|e| e.kind == relay::Kind::Message) else {
            return;
        };
        let (Some(room), Ok(text)) = (
            self.rooms.index_of(room_name),
            std::str::from_utf8(event.body),
        ) else {
            return;
        };
        let Some(seq) = self.rooms.get(room).map(|r| r.last_seq) else {
            return;
        };
        let sender = self
            .users
            .get(event.peer)
            .filter(|u| u.room() == room)
            .map(|_| event.peer);
        let audience = match sender {
            Some(peer) => Audience::OthersUnlessJson(peer),
            None => Audience::All,
        };
        let from: Rc<str> = Rc::from(event.from);
        let flags = (event.me, event.verified);
        self.message(room, from, text, flags, seq, event.ts, audience, false, cx);
        if let Some(peer) = sender {
            self.system(peer, &not_confirmed(text), Extra::None, cx);
        }
    }
}
