//! Changing names: `/nick` checked against the room's names (on one node, or
//! claimed across nodes through the bus), applied and told, and names given
//! back when their holders leave or lose them.

use super::*;

impl Chat {
    pub(super) fn nick(&mut self, id: PeerId, wanted: &str, cx: &mut impl Context) {
        let nick = match names::check(wanted) {
            Ok(nick) => nick,
            Err(why) => return self.error(id, &why, cx),
        };
        let Some(user) = self.users.get(id) else {
            return;
        };
        if user.is_verified() {
            let text = "your name comes from your token; it cannot be changed here";
            return self.error(id, text, cx);
        }
        let room = user.room();
        if *user.name() == *nick.name {
            return self.error(id, &format!("you are already {}", nick.name), cx);
        }
        if let Some(text) = self.nick_refusal(id, room, &nick) {
            return self.error(id, &text, cx);
        }
        if self.node.is_some() {
            if self.pending.claims.iter().any(|c| c.id == id) {
                let text = "your last name change is still being checked across nodes";
                return self.error(id, text, cx);
            }
            let (Some(r), Some(user)) = (self.rooms.get(room), self.users.get(id)) else {
                return;
            };
            let old = user.name();
            let old_keys = user.nick.then(|| names::keys(&old));
            let previous = old_keys.as_ref().map(|k| (&k[..], &*old));
            let now = cx.clock().now;
            match self
                .bus
                .claim_name(now, &r.name, &nick.keys, &nick.name, previous)
            {
                Publish::Queued(ticket) => {
                    self.pending.claims.push(Claim {
                        ticket,
                        id,
                        room,
                        nick,
                    });
                    return;
                }
                Publish::Dropped => {
                    let text = "names cannot be checked across nodes while they are out of reach; try again later";
                    return self.error(id, text, cx);
                }
                Publish::Local => {}
            }
        }
        self.apply_nick(id, room, nick, cx);
    }

    /// Why `id` may not take `nick` in `room` here, if it may not.
    pub(super) fn nick_refusal(
        &self,
        id: PeerId,
        room: usize,
        nick: &names::Nick,
    ) -> Option<String> {
        let r = self.rooms.get(room)?;
        match r.names.holder(&nick.keys) {
            // Another spelling of one's own name (`alice` to `Alice`).
            Some(Holder::User(holder)) if holder == id => None,
            Some(Holder::User(holder)) => {
                let theirs = self.users.get(holder).map(User::name);
                Some(match theirs {
                    Some(theirs) if *theirs != *nick.name => format!(
                        "the name {} is taken in this room: it looks like {theirs}",
                        nick.name
                    ),
                    _ => format!("the name {} is taken in this room", nick.name),
                })
            }
            Some(Holder::Away(_)) => Some(format!(
                "the name {} is kept for a user who is reconnecting",
                nick.name
            )),
            None => None,
        }
    }

    /// Redis said whether a name is free on every node.
    pub(super) fn claimed(
        &mut self,
        ticket: Ticket,
        holder: Option<String>,
        cx: &mut impl Context,
    ) {
        let Some(claim) = take_first(&mut self.pending.claims, |c| c.ticket == ticket) else {
            return;
        };
        if self
            .users
            .get(claim.id)
            .is_none_or(|u| u.room() != claim.room)
        {
            // Gone meanwhile: the claim is held by no presence entry, so
            // the name is free again.
            return;
        }
        if let Some(holder) = holder {
            let text = format!(
                "the name {} is taken in this room, by {holder} on another node",
                claim.nick.name
            );
            return self.error(claim.id, &text, cx);
        }
        // Someone here may have taken it while Redis was asked.
        if let Some(text) = self.nick_refusal(claim.id, claim.room, &claim.nick) {
            return self.error(claim.id, &text, cx);
        }
        self.apply_nick(claim.id, claim.room, claim.nick, cx);
    }

    /// `id` is called `nick` from now on, and its room is told.
    pub(super) fn apply_nick(
        &mut self,
        id: PeerId,
        room: usize,
        nick: names::Nick,
        cx: &mut impl Context,
    ) {
        let new: Rc<str> = Rc::from(nick.name.as_str());
        let Some(user) = self.users.get_mut(id) else {
            return;
        };
        let old = user.name().into_owned();
        let had_nick = std::mem::replace(&mut user.nick, true);
        user.name = Some(Rc::clone(&new));
        if let Some(r) = self.rooms.get_mut(room) {
            if had_nick {
                r.names.remove(&names::keys(&old), Holder::User(id));
            }
            r.names.insert(&nick.keys, Holder::User(id));
        }
        let line = Line::Nick {
            from: &old,
            to: &new,
        };
        self.to_room(room, &line, Audience::All, cx);
        self.relay(room, relay::Kind::Nick, id, false, &old, new.as_bytes(), cx);
        self.store_record(id);
    }

    /// `id` loses `name` to its verified owner: back to its default name,
    /// told why, and the room sees the change.
    pub(super) fn unname(&mut self, id: PeerId, room: usize, name: &str, cx: &mut impl Context) {
        let Some(user) = self.users.get_mut(id) else {
            return;
        };
        // Its own spelling (a look-alike of `name`, or `name` itself): the
        // keys the verified user did not take over are freed too.
        let old = user.name().into_owned();
        if let Some(r) = self.rooms.get_mut(room) {
            r.names.remove(&names::keys(&old), Holder::User(id));
        }
        // Its default name: `User <port>`, or `User <port>@<node>`.
        user.name = self
            .node
            .as_ref()
            .map(|node| Rc::from(format!("User {}@{node}", user.port)));
        user.nick = false;
        user.set_verified_until(None);
        let new = user.name().into_owned();
        let text =
            format!("the name {name} belongs to a verified user who just arrived: you are {new}");
        self.system(id, &text, Extra::None, cx);
        let line = Line::Nick {
            from: &old,
            to: &new,
        };
        self.to_room(room, &line, Audience::All, cx);
        // Other nodes see the change too, and its other keys come free
        // there (those the verified user took are its own already).
        if let Some(r) = self.rooms.get(room).filter(|_| self.node.is_some()) {
            let now = cx.clock().now;
            self.bus
                .release_name(now, &r.name, &names::keys(&old), &old);
        }
        self.relay(room, relay::Kind::Nick, id, false, &old, new.as_bytes(), cx);
        self.store_record(id);
    }
}
