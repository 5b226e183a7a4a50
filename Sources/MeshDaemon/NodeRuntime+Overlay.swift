import Foundation
import MeshControl
import MeshDHT
import MeshIdentity
import MeshNodeCore
import NIOCore

/// The DHT side of the node: joining, publishing the hosted wallets' presence records, lookups,
/// persistence (docs/dht.md, docs/storage.md). Runs on the node's event loop like everything else.
extension NodeRuntime {
    /// How often the routing table is checked for changes and, if it changed, written to the database
    /// (records are written as they are stored).
    static let contactSaveMs: Int64 = 2_000

    /// A record a peer stored here, written on the writer's thread; the STORE's acknowledgement goes out once the
    /// record is on disk. A write that fails or finds the writer's queue full drops the acknowledgement, so nothing
    /// unsaved is ever acknowledged (docs/storage.md).
    func storeRecord(_ record: PresenceRecord, acknowledgement: (bytes: [UInt8], to: SocketAddress)?) {
        let (store, logger, loop) = (store, logger, loop)
        let queued = writer.submit({ try store.saveRecord(record) }, done: { error in
            if let error {
                logger.error("database write failed; the record is not acknowledged", metadata: ["error": "\(error)"])
                return
            }
            guard let acknowledgement else { return }
            loop.execute { self.sendDatagram(acknowledgement.bytes, to: acknowledgement.to) }
        })
        if !queued { logger.warning("database writer busy: a STORE goes unacknowledged", metadata: ["wallet": "\(record.wallet)"]) }
    }

    /// Looks up a wallet's presence record.
    func lookup(_ wallet: WalletAddress) -> EventLoopFuture<LookupOutcome> {
        let promise = loop.makePromise(of: LookupOutcome.self)
        endTurnSoon()
        let id = core.lookup(wallet, now: Self.time(), into: &output)
        lookups[id] = promise
        handleEvents()
        return promise.futureResult
    }

    /// Writes what changed in the routing table since the last save.
    func saveContacts() {
        let contacts = Set(dht.contacts)
        let (added, removed, store) = (Array(contacts.subtracting(savedContacts)), Array(savedContacts.subtracting(contacts)), store)
        guard !added.isEmpty || !removed.isEmpty else { return }
        let wallMs = Self.wallNow()
        persist { try store.updateContacts(added: added, removed: removed, nowMs: wallMs) }
        savedContacts = contacts
    }

    /// A write on the writer's thread; a failure, or a full queue, is logged.
    func persist(_ write: @escaping @Sendable () throws -> Void) {
        let logger = logger
        let queued = writer.submit(write, done: { error in
            if let error { logger.error("database write failed", metadata: ["error": "\(error)"]) }
        })
        if !queued { logger.warning("database writer busy: a write was shed") }
    }

    // MARK: control

    func routesJSON() throws -> JSONValue {
        let now = Self.now()
        return .object([
            "nodeID": .string(dht.localID.hex),
            "records": .number(Double(dht.storedRecords.count)),
            "joined": .bool(dht.isJoined),
            "buckets": try JSONValue(encoding: dht.bucketSnapshot(nowMs: now)),
            "counters": try JSONValue(encoding: dht.counters),
        ])
    }

    /// A record as `node-ctl` shows it; `wallMs` is the wall clock (its expiry is wall-clock time).
    static func recordJSON(_ record: PresenceRecord, wallMs: Int64) -> JSONValue {
        .object([
            "wallet": .string(record.wallet.checksummed),
            "homeNode": .string(record.homeNode.address.checksummed),
            "homeNodeID": .string(record.homeNode.hex),
            "endpoints": .array(record.endpoints.map { .string($0.description) }),
            "relays": .array(record.relays.map { .string("\($0.id.address.checksummed)@\($0.endpoint)") }),
            "sequence": .number(Double(record.sequence)),
            "expiresInS": .number(Double((record.expiresAtMs - wallMs) / 1000)),
        ])
    }

    static func lookupJSON(_ outcome: LookupOutcome, wallMs: Int64) -> JSONValue {
        .object([
            "record": outcome.record.map { recordJSON($0, wallMs: wallMs) } ?? .null,
            "queried": .number(Double(outcome.queried)),
            "rounds": .number(Double(outcome.rounds)),
            "messages": .number(Double(outcome.messages)),
            "elapsedMs": .number(Double(outcome.elapsedMs)),
            "clockRefusals": .number(Double(outcome.clockRefusals)),
            "clockSkewMs": outcome.clockSkewMs.map { .number(Double($0)) } ?? .null,
            "clockSkew": outcome.clockSkewNote.map(JSONValue.string) ?? .null,
        ])
    }
}

extension DHTEndpoint {
    init?(socketAddress: SocketAddress) {
        switch socketAddress {
        case .v4(let a):
            let raw = UInt32(bigEndian: a.address.sin_addr.s_addr)
            self.init(ip: (0..<4).map { UInt8(truncatingIfNeeded: raw >> (24 - 8 * $0)) }, port: UInt16(socketAddress.port ?? 0))
        case .v6(let a):
            let bytes = withUnsafeBytes(of: a.address.sin6_addr) { Array($0) }
            self.init(ip: bytes, port: UInt16(socketAddress.port ?? 0))
        case .unixDomainSocket:
            return nil
        }
    }
}

extension SocketAddress: NodeAddress {
    public init?(dhtEndpoint endpoint: DHTEndpoint) {
        let host = endpoint.isIPv4 ? endpoint.ip.map(String.init).joined(separator: ".")
                                   : String(endpoint.description.dropFirst().prefix { $0 != "]" })
        guard let address = try? SocketAddress(ipAddress: host, port: Int(endpoint.port)) else { return nil }
        self = address
    }

    public var dhtEndpoint: DHTEndpoint? { DHTEndpoint(socketAddress: self) }
}
