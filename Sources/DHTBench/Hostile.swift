import Foundation
import MeshDHT
import MeshIdentity
import MeshTestKit

/// `DHTBench --hostile [N]` (docs/dht.md, "Hostile peers"): what forged and spoofed requests cost a node.
/// - Amplification: a FIND_NODE and a FIND_VALUE as a spoofing attacker sends them (unpadded, signed by a
///   throw-away key, from an address the node never verified), to a node holding 20 contacts (IPv4, then
///   IPv6) and a record: bytes sent to the spoofed address / bytes of the request.
/// - CPU per forged request: N FIND_NODEs, each signed by a fresh key (signing not timed), fed to `receive`
///   from N different /24 prefixes (every one passes the rate limits), then all from one address.
func runHostileBench(requests: Int) {
    var rng = SplitMix64(seed: 77)
    let now: Int64 = 1_700_000_000_000
    func victim(ipv6: Bool) -> (DHTNode, NodeID) {
        var node = DHTNode(identity: rng.privateKey(), config: DHTConfig(), seed: 1)
        let contacts = (0..<20).map { i in
            Contact(id: NodeID.random(using: &rng),
                    endpoint: ipv6 ? DHTEndpoint(ip: [0x20, 0x01, 0x0d, 0xb8, UInt8(i)] + [UInt8](repeating: 7, count: 11), port: 4460)!
                                   : DHTEndpoint(ip: [45, 0, UInt8(i), 1], port: 4460)!)
        }
        let wallet = rng.privateKey()
        let record = PresenceRecord.make(wallet: wallet, homeNode: contacts[0].id, endpoints: [contacts[0].endpoint],
                                         relays: Array(contacts.prefix(4)), sequence: 1, expiresAtMs: now + 3_600_000)
        node.restore(contacts: contacts, records: [record], nowMs: now)
        return (node, record.key)
    }
    let spoofed = DHTEndpoint(ip: [203, 0, 113, 9], port: 53)!
    print("amplification (bytes to the spoofed address / request bytes), request unpadded as an attacker sends it:")
    for ipv6 in [false, true] {
        var (node, key) = victim(ipv6: ipv6)
        for (name, message) in [("FIND_NODE", DHTMessage.findNode(target: NodeID.random(using: &rng))), ("FIND_VALUE", .findValue(key: key))] {
            let request = DHTWire.seal(DHTPacket(txid: rng.next(), message: message), timestampMs: now, identity: rng.privateKey())
            let sent = node.receive(request, from: spoofed, nowMs: now).reduce(0) { total, action in
                if case .send(let bytes, let to) = action, to == spoofed { total + bytes.count } else { total }
            }
            print("  \(name), \(ipv6 ? "IPv6" : "IPv4") contacts: \(request.count) B in, \(sent) B out: \(String(format: "%.2f", Double(sent) / Double(request.count)))×")
        }
    }

    let forged = (0..<requests).map { _ in
        DHTWire.seal(DHTPacket(txid: rng.next(), message: .findNode(target: NodeID.random(using: &rng))), timestampMs: now,
                     identity: rng.privateKey())
    }
    let clock = ContinuousClock()
    for (label, source) in [("each from its own /24", { (i: Int) in DHTEndpoint(ip: [100, UInt8(i >> 16 & 0xff), UInt8(i >> 8 & 0xff), UInt8(i & 0xff) | 1], port: 9)! }),
                            ("all from one address", { (_: Int) in DHTEndpoint(ip: [198, 51, 100, 7], port: 9)! })] {
        var (node, _) = victim(ipv6: false)
        let sources = (0..<requests).map(source)
        let elapsed = clock.measure {
            for i in 0..<requests { _ = node.receive(forged[i], from: sources[i], nowMs: now + Int64(i / 1_000)) }
        }
        let us = (Double(elapsed.components.seconds) * 1e6 + Double(elapsed.components.attoseconds) / 1e12) / Double(requests)
        let c = node.counters
        print("CPU per forged FIND_NODE, \(requests) requests \(label): \(String(format: "%.1f", us)) µs " +
              "(answered \(c.messagesIn), rate-limited \(c.dropped - c.malformed - c.badSignature - c.staleTimestamp - c.replayed), contacts in table \(node.contactCount))")
    }
}
