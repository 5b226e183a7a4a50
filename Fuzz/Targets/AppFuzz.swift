@testable import MeshDaemon
import MeshCall
import MeshRouting

/// Application messages inside link payloads (docs/calls.md): each must parse back to itself after serializing.
enum AppFuzz {
    static func run(_ input: [UInt8]) {
        guard let message = AppMessage(parsing: input) else { return }
        precondition(AppMessage(parsing: message.serialize()) == message, "application message round trip")
    }

    static func seeds() -> [[UInt8]] {
        let wallet = Fuzz.walletKey.address
        let messages: [AppMessage] = [
            .resolveRequest(query: 7, address: wallet), .resolveReply(query: 7, address: wallet, hosted: true),
            .gossip(GossipMessage.requestFull.serialize()), .call(CallMessage.ringing(CallID(raw: 42)).serialize()),
            .media(CallID(raw: 42), RTPFuzz.packets()[0]),
        ]
        return messages.map { $0.serialize() }
    }
}
