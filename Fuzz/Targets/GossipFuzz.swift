import MeshRouting

/// Gossip (docs/gossip.md): each message must parse back to itself after serializing, and a node takes the
/// messages from a linked neighbour.
enum GossipFuzz {
    static func run(_ input: [UInt8]) {
        var engine = GossipEngine(local: Fuzz.nodeKey.address, hosted: [Fuzz.walletKey], sequence: 1,
                                  nowMs: Fuzz.nowMs)
        var now = Fuzz.nowMs
        _ = engine.neighbourUp(Fuzz.peerKey.address, cost: 10, nowMs: now)
        for bytes in Fuzz.messages(input) {
            if let message = GossipMessage(parsing: bytes) {
                precondition(GossipMessage(parsing: message.serialize()) == message, "gossip message round trip")
            }
            _ = engine.receive(bytes, from: Fuzz.peerKey.address, nowMs: now)
            _ = engine.tick(nowMs: now)
            now += 5_000
        }
    }

    /// What a neighbour that hosts a wallet sends: its full table when the link comes up, then a digest.
    static func seeds() -> [[UInt8]] {
        var peer = GossipEngine(local: Fuzz.peerKey.address, hosted: [Fuzz.remoteWalletKey], sequence: 7,
                                nowMs: Fuzz.nowMs)
        let table = sent(peer.neighbourUp(Fuzz.nodeKey.address, cost: 10, nowMs: Fuzz.nowMs))
        let digest = sent(peer.tick(nowMs: Fuzz.nowMs + 60_000))
        return [Fuzz.framed(table), Fuzz.framed(table + digest), Fuzz.framed([GossipMessage.requestFull.serialize()])]
    }

    private static func sent(_ actions: [GossipAction]) -> [[UInt8]] {
        actions.compactMap { if case .send(let bytes, _) = $0 { bytes } else { nil } }
    }
}
