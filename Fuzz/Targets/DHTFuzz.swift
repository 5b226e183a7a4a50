@testable import MeshDHT
import MeshIdentity

/// DHT datagrams (docs/dht.md) into a node with a fixed key that knows the sender and is looking a record up
/// through it. Each message goes in as it is, and once more re-signed by the sender's key and carrying the
/// node's cookie for the sender, so the fuzzer also reaches what lies behind the cookie and signature checks: the
/// replay cache, the protocol core and the record store.
enum DHTFuzz {
    static let peer = Contact(id: NodeID(publicKey: Fuzz.peerKey.publicKey), endpoint: DHTEndpoint(ip: [10, 0, 0, 2], port: 4460)!)
    /// Appended to a message to parse it as the signed part of a datagram.
    static let placeholderSignature = Fuzz.peerKey.sign(digest: [UInt8](repeating: 0, count: 32)).bytes

    static func run(_ input: [UInt8]) {
        var (node, _) = nodeLookingUp()
        var now = Fuzz.nowMs
        let cookie = cookie(from: &node)
        for bytes in Fuzz.messages(input) {
            _ = node.receive(bytes, from: peer.endpoint, nowMs: now)
            if let opened = DHTWire.open(bytes + placeholderSignature) {
                let signed = DHTWire.seal(opened.packet, timestampMs: opened.timestampMs, identity: Fuzz.peerKey)
                _ = node.receive(cookie.map { DHTWire.Cookied.wrap(signed, cookie: $0) } ?? signed, from: peer.endpoint, nowMs: now)
            }
            _ = node.tick(nowMs: now)
            now += 300
        }
    }

    /// The cookie the node hands `peer` (a STORE from an unproven address gets one).
    static func cookie(from node: inout DHTNode) -> Cookie? {
        let store = DHTWire.seal(DHTPacket(txid: 1, message: .store(record)), timestampMs: Fuzz.nowMs, identity: Fuzz.peerKey)
        return node.receive(store, from: peer.endpoint, nowMs: Fuzz.nowMs).lazy.compactMap { action -> Cookie? in
            guard case .send(let bytes, _) = action else { return nil }
            return DHTWire.CookieReply(parsing: bytes)?.cookie
        }.first
    }

    /// The node under test, after it asked `peer` for a record; and that request.
    static func nodeLookingUp() -> (DHTNode, DHTPacket?) {
        var node = DHTNode(identity: Fuzz.nodeKey, config: DHTConfig(), seed: 1)
        node.restore(contacts: [peer], records: [], nowMs: Fuzz.nowMs)
        let (_, actions) = node.findValue(record.key, nowMs: Fuzz.nowMs)
        let request = actions.lazy.compactMap { action -> DHTPacket? in
            guard case .send(let datagram, _) = action else { return nil }
            return DHTWire.open(datagram)?.packet
        }.first
        return (node, request)
    }

    static let record = PresenceRecord.make(wallet: Fuzz.remoteWalletKey, homeNode: peer.id, endpoints: [peer.endpoint],
                                            relays: [peer], sequence: 3, expiresAtMs: Fuzz.nowMs + 3_600_000)

    /// Every message type, sealed by the peer: requests, and answers to the node's own request. Each one twice:
    /// the whole datagram, and its signed part (which `run` re-signs). And a clock notice for that request.
    static func seeds() -> [[UInt8]] {
        let txid = nodeLookingUp().1?.txid ?? 0
        let messages: [(UInt64, DHTMessage)] = [
            (11, .ping), (txid, .pong(observed: peer.endpoint)), (12, .findNode(target: peer.id)),
            (txid, .nodes([peer])), (13, .findValue(key: record.key)), (txid, .value(record)), (14, .store(record)),
            (txid, .stored(.stored)), (txid, .stored(.refused(.expired))), (15, .withdraw(key: record.key, sequence: 3)),
        ]
        return messages.flatMap { txid, message -> [[UInt8]] in
            let datagram = DHTWire.seal(DHTPacket(txid: txid, message: message), timestampMs: Fuzz.nowMs, identity: Fuzz.peerKey)
            return [Fuzz.framed([datagram]), Fuzz.framed([Array(datagram.dropLast(Signature.byteCount))])]
        } + [Fuzz.framed([DHTWire.ClockNotice(txid: txid, clockMs: Fuzz.nowMs - 150_000).serialized()])]
    }
}
