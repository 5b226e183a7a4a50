@testable import MeshDaemon
import MeshCall
@testable import MeshRouting

/// Every decoder of a link payload above the link layer (docs/calls.md, docs/forwarding.md, docs/routing.md):
/// application messages, the forwarding layer's chain messages, wallet queries, and the call bytes inside a chain.
/// Each message that parses must parse back to itself after serializing.
enum AppFuzz {
    static func run(_ input: [UInt8]) {
        if let message = AppMessage(parsing: input) {
            precondition(AppMessage(parsing: message.serialize()) == message, "application message round trip")
        }
        if let message = ChainMessage(parsing: input) {
            precondition(ChainMessage(parsing: message.serialize()) == message, "chain message round trip")
        }
        if let message = WalletFinder.Message(parsing: input) {
            precondition(WalletFinder.Message(parsing: message.serialize()) == message, "wallet query round trip")
        }
        if let inner = CallInner(parsing: input) {
            precondition(CallInner(parsing: inner.serialize()) == inner, "call bytes round trip")
        }
        if let inner = ChainInner(parsing: input[...]) {
            precondition(ChainInner(parsing: inner.serialize()[...]) == inner, "chain inner round trip")
        }
    }

    static func seeds() -> [[UInt8]] {
        let wallet = Fuzz.walletKey.address
        let key = ChainKey(call: 42, chain: 7)
        let setup = ChainMessage.Setup.sign(key: key, wallet: Fuzz.walletKey, target: wallet, expiresAtMs: 1_000, hopLimit: 6,
                                            backLabel: 9, path: [wallet], avoid: [])
        let figures = [HopFigures(node: wallet, rttMs: 1.5, lossPercent: 0.5)]
        let messages: [[UInt8]] = [
            AppMessage.resolveRequest(query: 7, address: wallet).serialize(),
            AppMessage.resolveReply(query: 7, address: wallet, hosted: true).serialize(),
            AppMessage.gossip(GossipMessage.requestFull.serialize()).serialize(),
            ChainMessage.setup(setup).serialize(), ChainMessage.accept(key, label: 5, figures: figures).serialize(),
            ChainMessage.refuse(key, .sessionLimit, by: wallet).serialize(), ChainMessage.teardown(key, .closed).serialize(),
            ChainMessage.report(label: 5, figures).serialize(),
            ChainMessage.data(label: 5, CallInner.signal(CallMessage.ringing(CallID(raw: 42)).serialize()).serialize()),
            WalletFinder.Message.find(query: 3, wallet: wallet, ttl: 6).serialize(),
            CallInner.media(RTPFuzz.packets()[0]).serialize(),
        ]
        return messages
    }
}
