//! Who a user is across reconnects and nodes: resume tokens (issued, stored
//! in Redis in cluster mode, taken back on a resume), `/whoami`, and verified
//! users' signed tokens (checked at the upgrade, renewed, expired).

use super::*;

impl Chat {
    /// `id`'s resume token as shown to users, issued now if it has none
    /// (`None` with resuming off).
    pub(super) fn token_of(&mut self, id: PeerId) -> Option<String> {
        if self.config.resume_grace.is_zero() {
            return None;
        }
        let user = self.users.get_mut(id)?;
        if user.token.is_none() {
            let token = resume::fresh()?;
            user.token = Some(token);
            self.tokens.issue(token, id, user.room());
            self.store_record(id);
        }
        self.users.get(id)?.token.as_ref().map(resume::hex)
    }

    /// In cluster mode, (re)writes `id`'s resume record in Redis, so that
    /// another node can bring it back under its present name.
    pub(super) fn store_record(&mut self, id: PeerId) {
        let (Some(node), Some(user)) = (&self.node, self.users.get(id)) else {
            return;
        };
        let (Some(token), Some(r)) = (&user.token, self.rooms.get(user.room())) else {
            return;
        };
        let record = encode_record(node, &user.name(), user.nick);
        let digest = resume::digest(token);
        self.bus.keep_resume(
            Instant::now(),
            &r.name,
            &digest,
            Some(&record),
            RECORD_TTL_MS,
        );
    }

    /// In cluster mode, deletes (`ttl_ms` `None`) or shortens the life of
    /// the resume record of `token` in room `room`.
    pub(super) fn forget_record(
        &mut self,
        token: &resume::Token,
        room: usize,
        ttl_ms: Option<u64>,
    ) {
        let (Some(_), Some(r)) = (&self.node, self.rooms.get(room)) else {
            return;
        };
        let digest = resume::digest(token);
        let record: Option<&[u8]> = ttl_ms.map(|_| &[][..]);
        self.bus.keep_resume(
            Instant::now(),
            &r.name,
            &digest,
            record,
            ttl_ms.unwrap_or(0),
        );
    }

    /// A token this node does not hold came back from Redis (`record`),
    /// or did not (`None`: none there, or Redis failed): the waiting
    /// connection is welcomed, as the user it was or as a new one.
    pub(super) fn resume_answered(
        &mut self,
        ticket: Ticket,
        record: Option<Record>,
        cx: &mut impl Context,
    ) {
        let Some(waiting) = take_first(&mut self.pending.resuming, |r| r.ticket == ticket) else {
            return;
        };
        let Resuming {
            id,
            target,
            identity,
            opening,
            ..
        } = waiting;
        self.open(id, opening, target, identity, Some(record), cx);
    }

    /// A user of this node resumed on another one with the token filed
    /// under `digest`: it goes from here without a leave (its new node
    /// told nobody of a join either), and a connection of it still open
    /// is closed as a local takeover's is.
    pub(super) fn resumed_elsewhere(&mut self, room: usize, digest: &str, cx: &mut impl Context) {
        let now = cx.clock().now;
        let (name, nick, hold) = match self.tokens.take_digest(digest, room) {
            Found::Present(old) => {
                let Some(mut user) = self.users.remove(old) else {
                    return;
                };
                self.detach(old, &user);
                cx.close(old, REPLACED_CLOSE_CODE, "resumed on another node");
                (user.shared_name(), user.nick, Holder::User(old))
            }
            Found::Away(away) => {
                if let Some(r) = self.rooms.get_mut(room) {
                    r.away -= 1;
                }
                (away.name, away.nick, Holder::Away(away.departure))
            }
            Found::Unknown => return,
        };
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        if nick {
            r.names.remove(&names::keys(&name), hold);
        }
        // Its presence entry here goes; its name's claim moved already.
        self.bus.presence(now, &r.name, &name, Presence::Left);
        if r.is_empty() {
            r.presence.clear();
            if r.history.is_empty() && r.away == 0 {
                self.rooms.forget(room);
            } else if r.empty_since.is_none() {
                r.empty_since = Some(now);
            }
        }
    }

    /// How a plain-text user is told its token.
    pub(super) fn token_text(&self, token: &str, last_seq: u64) -> String {
        format!(
            "your resume token is {token}: reconnect within {} s with ?resume={token}&since={last_seq} to come back as yourself (it works once; you are given a new one)",
            self.config.resume_grace.as_secs()
        )
    }

    pub(super) fn whoami(&mut self, id: PeerId, cx: &mut impl Context) {
        let token = self.token_of(id);
        let Some(user) = self.users.get(id) else {
            return;
        };
        let Some(r) = self.rooms.get(user.room()) else {
            return;
        };
        let name = user.name();
        let mut text = format!(
            "You are {name} in {}; its last message is number {}",
            r.name, r.last_seq
        );
        if let Some(token) = &token {
            text.push_str("; ");
            text.push_str(&self.token_text(token, r.last_seq));
        }
        let extra = Extra::WhoAmI {
            you: &name,
            last_seq: r.last_seq,
            resume: token.as_deref(),
        };
        self.system(id, &text, extra, cx);
    }

    /// A fresh token (`/token JWT`, JSON `{"type":"token"}`): it must name
    /// the same user; it moves the connection's deadline.
    pub(super) fn refresh_token(&mut self, id: PeerId, token: &str, cx: &mut impl Context) {
        let Some(verifier) = self.config.verifier.clone() else {
            return self.error(id, "this server does not verify users", cx);
        };
        let Some(user) = self.users.get(id) else {
            return;
        };
        let identity = match verifier.verify(token, cx.clock().unix_ms) {
            Ok(identity) => identity,
            Err(e) => {
                info!("user {} sent a bad token: {}", user.name(), e.reason());
                return self.error(id, &format!("token refused: {}", e.reason()), cx);
            }
        };
        let same = user.is_verified() && user.name.as_deref() == Some(identity.name.as_str());
        let room_ok = self
            .rooms
            .get(user.room())
            .is_some_and(|r| identity.may_join(&r.name));
        if !same || !room_ok {
            let text = "token refused: it is for another user or does not allow this room";
            return self.error(id, text, cx);
        }
        if let Some(user) = self.users.get_mut(id) {
            user.set_verified_until(Some(identity.expires_ms));
        }
        let text = format!(
            "token accepted: you stay verified until {} (Unix ms)",
            identity.expires_ms
        );
        self.system(id, &text, Extra::None, cx);
    }

    /// Who `upgrade` is: the identity in its token (`?token=` first, else
    /// the `wschat_token` cookie) when users are verified; `401` for a bad
    /// token, or for none with `--require-auth`; `403` for a room the token
    /// does not allow.
    pub(super) fn identify(
        &self,
        upgrade: &Upgrade<'_>,
        target: &Target,
    ) -> Result<Option<auth::Identity>, Refusal> {
        let Some(verifier) = &self.config.verifier else {
            return Ok(None);
        };
        let token = target
            .token
            .as_deref()
            .or_else(|| upgrade.cookie.and_then(auth::token_in_cookie));
        let Some(token) = token else {
            return match self.config.require_auth {
                true => Err(Refusal {
                    status: 401,
                    reason: "a token is required (?token= or the wschat_token cookie)",
                }),
                false => Ok(None),
            };
        };
        let now_ms = Clock::read().unix_ms;
        let mut identity = verifier.verify(token, now_ms).map_err(|e| Refusal {
            status: 401,
            reason: e.reason(),
        })?;
        // The nickname rules hold for verified names too (NFC, no
        // look-alike of `User <digits>`): the backend cannot mint a forgery.
        identity.name = names::check(&identity.name)
            .map_err(|_| Refusal {
                status: 401,
                reason: "the token's name is not a valid nickname",
            })?
            .name;
        if !identity.may_join(&target.room) {
            return Err(Refusal {
                status: 403,
                reason: "the token does not allow this room",
            });
        }
        Ok(Some(identity))
    }

    /// Closes the connections of verified users whose token ran out.
    pub(super) fn expire_tokens(&mut self, cx: &mut impl Context) {
        if self.config.verifier.is_none() {
            return;
        }
        let now = cx.clock().unix_ms;
        for (id, user) in self.users.iter_mut() {
            if user.verified_until().is_some_and(|until| until <= now) {
                info!("{}: token expired, closing", user.name());
                // Once: it is no longer verified while it closes.
                user.set_verified_until(None);
                cx.close(id, auth::EXPIRED_CLOSE_CODE, "token expired");
            }
        }
    }
}
