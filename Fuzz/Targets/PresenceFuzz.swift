import MeshDHT

/// Presence records (docs/dht.md), as STORE and VALUE carry them and the node's store keeps them: a record
/// must parse back to itself after serializing, and validation must not crash.
enum PresenceFuzz {
    static func run(_ input: [UInt8]) {
        guard let record = PresenceRecord(parsing: input) else { return }
        precondition(PresenceRecord(parsing: record.serialize()) == record, "presence record round trip")
        _ = record.validate(nowMs: Fuzz.nowMs, config: DHTConfig())
    }

    /// A record with IPv4 and IPv6 endpoints and a relay, and a withdrawal.
    static func seeds() -> [[UInt8]] {
        let v6 = DHTEndpoint(ip: [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [1], port: 4461)!
        let endpoints = [DHTFuzz.peer.endpoint, v6]
        return [endpoints, []].map { endpoints in
            PresenceRecord.make(wallet: Fuzz.remoteWalletKey, homeNode: DHTFuzz.peer.id, endpoints: endpoints,
                                relays: endpoints.isEmpty ? [] : [DHTFuzz.peer], sequence: 9,
                                expiresAtMs: Fuzz.nowMs + 600_000).serialize()
        }
    }
}
