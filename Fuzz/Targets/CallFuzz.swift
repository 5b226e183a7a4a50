import MeshCall

/// Call signalling (docs/calls.md): each message must parse back to itself after serializing, and a node that
/// hosts a wallet takes the messages from a neighbour, answering every call that rings.
enum CallFuzz {
    static func run(_ input: [UInt8]) {
        var engine = CallEngine(wallets: [Fuzz.walletKey])
        var now = Fuzz.nowMs
        for bytes in Fuzz.messages(input) {
            if let message = CallMessage(parsing: bytes) {
                precondition(CallMessage(parsing: message.serialize()) == message, "call message round trip")
            }
            for case .incoming(let id, _, _) in engine.receive(bytes, from: Fuzz.peerKey.address, now: now) {
                _ = engine.answer(id, now: now)
            }
            _ = engine.tick(now: now)
            now += 500
        }
    }

    /// A remote wallet's real offer, then the messages that follow it.
    static func seeds() -> [[UInt8]] {
        var caller = CallEngine(wallets: [Fuzz.remoteWalletKey])
        guard let (id, actions) = caller.place(from: Fuzz.remoteWalletKey.address, to: Fuzz.walletKey.address,
                                               via: Fuzz.nodeKey.address, bitrate: 24_000, now: Fuzz.nowMs),
              case .send(let offer, _) = actions.first
        else { return [] }
        return [
            Fuzz.framed([offer]),
            Fuzz.framed([offer, CallMessage.hangup(id, .normal).serialize()]),
            Fuzz.framed([offer, offer, CallMessage.reject(id, .busy).serialize()]),
            Fuzz.framed([CallMessage.ringing(id).serialize()]),
        ]
    }
}
