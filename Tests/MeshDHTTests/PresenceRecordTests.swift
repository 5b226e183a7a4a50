import Foundation
@testable import MeshDHT
import MeshIdentity
import MeshTestKit
import Testing

@Suite struct PresenceRecordTests {
    var random = TestRandom(seed: 21)
    let config = DHTConfig()

    mutating func record(endpoints: Int = 2, relays: Int = 1, sequence: UInt64 = 5, expiresIn: Int64 = 3_600_000,
                         wallet: PrivateKey? = nil) -> PresenceRecord {
        let key = wallet ?? random.key()
        return PresenceRecord.make(
            wallet: key, homeNode: random.id(),
            endpoints: (0..<endpoints).map { DHTEndpoint(ip: [45, 0, 0, UInt8($0)], port: 4460)! },
            relays: (0..<relays).map { _ in Contact(id: random.id(), endpoint: endpoint("[2001:db8::9]:4460")) },
            sequence: sequence, expiresAtMs: t0 + expiresIn)
    }

    @Test mutating func serializesParsesAndValidates() throws {
        let r = record()
        #expect(PresenceRecord(parsing: r.serialize()) == r)
        #expect(r.validate(nowMs: t0, config: config) == nil)
        #expect(r.key == NodeID.key(for: r.wallet))
        let json = try JSONEncoder().encode(r)
        #expect(try JSONDecoder().decode(PresenceRecord.self, from: json) == r)
        #expect(String(decoding: json, as: UTF8.self).contains(r.wallet.checksummed))
    }

    @Test mutating func truncatedOrExtendedBytesDoNotParse() {
        let bytes = record().serialize()
        for length in 0..<bytes.count { #expect(PresenceRecord(parsing: Array(bytes.prefix(length))) == nil) }
        #expect(PresenceRecord(parsing: bytes + [0]) == nil)
    }

    @Test mutating func refusesTamperingExpiryAndSize() {
        let r = record()
        var moved = r
        moved.endpoints = [endpoint("66.6.6.6:1")]
        #expect(moved.validate(nowMs: t0, config: config) == .badSignature)
        var raised = r
        raised.sequence += 1
        #expect(raised.validate(nowMs: t0, config: config) == .badSignature)
        // Signed by another key than the wallet it names.
        var stolen = r
        stolen.wallet = random.key().address
        #expect(stolen.validate(nowMs: t0, config: config) == .badSignature)

        #expect(r.validate(nowMs: r.expiresAtMs, config: config) == .expired)
        #expect(record(expiresIn: 24 * 3_600_000 + 1).validate(nowMs: t0, config: config) == .expiryTooFarAhead)
        #expect(record(expiresIn: 24 * 3_600_000).validate(nowMs: t0, config: config) == nil)
        #expect(record(endpoints: config.maxEndpoints + 1).validate(nowMs: t0, config: config) == .tooManyEndpoints)
        #expect(record(relays: config.maxRelays + 1).validate(nowMs: t0, config: config) == .tooManyRelays)
        var small = config
        small.maxRecordBytes = 200
        #expect(record(relays: 2).validate(nowMs: t0, config: small) == .oversized)
        // The largest record the limits allow still fits a STORE datagram well under 1200 bytes.
        let largest = record(endpoints: config.maxEndpoints, relays: config.maxRelays)
        #expect(largest.validate(nowMs: t0, config: config) == nil)
        #expect(largest.serialize().count <= config.maxRecordBytes)
    }
}
