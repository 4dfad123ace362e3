//! Echo mode: every message goes back to its sender alone, unchanged, and
//! nothing else happens. It is what conformance suites (the Autobahn
//! TestSuite) expect of a server, and it runs none of the chat: no rooms,
//! no names, no history.

use crate::service::{
    Context, Gauge, Goodbye, HttpGet, HttpReply, Kind, Message, PeerId, Refusal, Service, Upgrade,
};

/// The echo service.
#[derive(Debug, Default)]
pub struct Echo {
    /// Subprotocols accepted (echo speaks any the operator names).
    pub protocols: Vec<String>,
}

impl Service for Echo {
    type Admitted = ();

    fn protocols(&self) -> Vec<String> {
        self.protocols.clone()
    }

    fn admit(&mut self, _upgrade: &Upgrade<'_>) -> Result<(), Refusal> {
        Ok(())
    }

    fn on_open(&mut self, _: PeerId, _: &Upgrade<'_>, _: (), _: &mut impl Context) {}

    fn on_message(&mut self, id: PeerId, message: Message<'_>, cx: &mut impl Context) {
        let echoed = match message {
            Message::Text(text) => cx.encode(Kind::Text, &[text.as_bytes()]),
            Message::Binary(bytes) => cx.encode(Kind::Binary, &[bytes]),
        };
        cx.deliver(id, &echoed);
    }

    fn on_close(&mut self, _: PeerId, _: Goodbye, _: &mut impl Context) {}

    fn on_throttled(&mut self, _: PeerId, _: &mut impl Context) {}

    fn on_http(&mut self, _request: &HttpGet<'_>, _cx: &mut impl Context) -> HttpReply {
        HttpReply::text(404, "echo mode serves WebSocket connections only")
    }

    fn gauges(&self) -> Vec<Gauge> {
        Vec::new()
    }

    fn on_tick(&mut self, _: &mut impl Context) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::outbox::SharedFrame;
    use crate::service::Clock;
    use crate::service::Outgoing;
    use std::net::SocketAddr;

    #[derive(Default)]
    struct Recorder(Vec<(PeerId, Vec<u8>)>);

    impl Context for Recorder {
        fn clock(&self) -> Clock {
            Clock::read()
        }

        fn encode(&mut self, _kind: Kind, parts: &[&[u8]]) -> Outgoing {
            Outgoing::from_plain(SharedFrame::concat(&[], parts))
        }

        fn deliver(&mut self, to: PeerId, message: &Outgoing) {
            self.0.push((to, message.plain().as_bytes().to_vec()));
        }

        fn close(&mut self, _to: PeerId, _code: u16, _reason: &'static str) {
            unreachable!("echo closes nobody");
        }

        fn answer_http(&mut self, _ticket: crate::service::HttpTicket, _reply: HttpReply) {
            unreachable!("echo answers at once");
        }
    }

    #[test]
    fn returns_each_message_to_its_sender_only() {
        let (mut echo, mut out) = (Echo::default(), Recorder::default());
        let upgrade = Upgrade {
            remote: SocketAddr::from(([127, 0, 0, 1], 1)),
            target: "/anything/at/all",
            protocol: None,
            cookie: None,
        };
        for id in [0, 1] {
            echo.admit(&upgrade).expect("echo admits any target");
            echo.on_open(id, &upgrade, (), &mut out);
        }
        assert!(out.0.is_empty(), "no announcements");
        echo.on_message(1, Message::Text("/nick not-a-command-here"), &mut out);
        echo.on_message(0, Message::Binary(&[0, 159]), &mut out);
        assert_eq!(
            out.0,
            [(1, b"/nick not-a-command-here".to_vec()), (0, vec![0, 159])]
        );
        echo.on_close(
            1,
            Goodbye {
                code: 1000,
                by_peer: true,
            },
            &mut out,
        );
        assert_eq!(out.0.len(), 2, "nothing said on leaving");
    }
}
