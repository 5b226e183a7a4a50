import MeshLink

/// Link datagrams (docs/links.md) into the link layer of a node with a fixed key that is dialling the sender:
/// handshake initiations and responses, transport datagrams, anything else.
enum LinkFuzz {
    /// The two endpoints of the fuzzed exchange.
    enum Host: String, LinkEndpoint {
        case node, peer
        var cookieBytes: [UInt8] { Array(rawValue.utf8) }
        var rateLimitKey: [UInt8] { cookieBytes }
        var description: String { rawValue }
    }

    static func run(_ input: [UInt8]) {
        var node = LinkManager<Host>(identity: Fuzz.nodeKey)
        var now = Fuzz.nowMs
        _ = node.connect(to: .peer, pinned: Fuzz.peerKey.address, now: now)
        for datagram in Fuzz.messages(input) {
            _ = node.receive(datagram, from: .peer, now: now)
            now += 20
        }
        _ = node.tick(now: now + 60_000)
    }

    /// A real handshake (pinned, so the initiation names its responder and passes mac1) and a transport datagram
    /// between two nodes with fixed keys.
    static func seeds() -> [[UInt8]] {
        var node = LinkManager<Host>(identity: Fuzz.nodeKey)
        var peer = LinkManager<Host>(identity: Fuzz.peerKey)
        let initiation = sent(peer.connect(to: .node, pinned: node.localAddress, now: Fuzz.nowMs))
        let response = sent(node.receive(initiation, from: .peer, now: Fuzz.nowMs))
        let confirmation = sent(peer.receive(response, from: .node, now: Fuzz.nowMs))
        let transport = sent(peer.send(Array("hello".utf8), to: node.localAddress, now: Fuzz.nowMs))
        return [
            Fuzz.framed([initiation]), Fuzz.framed([response]), Fuzz.framed([initiation, confirmation, transport]),
            Fuzz.framed([initiation, initiation]),
        ]
    }

    /// The one datagram the actions send.
    private static func sent(_ actions: [LinkAction<Host>]) -> [UInt8] {
        for case .send(let datagram, _) in actions { return datagram }
        return []
    }
}
