import Foundation
import MeshControl
import MeshDHT
import MeshIdentity
import NIOCore

/// The DHT side of the node: joining, publishing the hosted wallets' presence records, lookups,
/// persistence (docs/dht.md, docs/storage.md). Runs on the node's event loop like everything else.
extension NodeRuntime {
    /// How often the routing table is checked for changes and, if it changed, written to the database
    /// (records are written as they are stored).
    static let contactSaveMs: Int64 = 2_000

    /// Joins the DHT; the DHT core retries and re-joins by itself (docs/dht.md, "Joining").
    func joinOverlay(bootstrap: [DHTEndpoint], advertise: [DHTEndpoint], now: Int64) {
        presence = PresencePolicy(relayOnly: config.relayOnly, advertised: advertise, now: now)
        runDHT(dht.bootstrap(bootstrap, nowMs: now))
        publishPresence(now: now, reach: currentReach())
    }

    func overlayTick(now: Int64) {
        if dht.nextDeadline.map({ $0 <= now }) ?? false { runDHT(dht.tick(nowMs: now)) }
        publishIfDue(now: now)
        if now >= nextContactSave {
            nextContactSave = now + Self.contactSaveMs
            saveContacts()
        }
    }

    /// Withdraws the hosted wallets' records (best effort) and saves the table.
    func leaveOverlay(now: Int64) {
        for wallet in wallets { runDHT(dht.withdraw(wallet.address, nowMs: now)) }
        saveContacts()
    }

    /// Signs and publishes a record for every hosted wallet with the node's endpoints and relays (`reach`,
    /// by default the current ones).
    /// Publishes when the presence policy says so: on the core tick, and at the end of every turn (the routing table
    /// grows with DHT answers during the join window).
    func publishIfDue(now: Int64) {
        guard let reach = presence.due(now: now, contacts: dht.contactCount, current: reachFacts) else { return }
        publishPresence(now: now, reach: reach)
    }

    func publishPresence(now: Int64, reach: PresencePolicy.Reach) {
        presence.didPublish(reach, contacts: dht.contactCount)
        for wallet in wallets {
            runDHT(dht.publish(wallet: wallet, endpoints: reach.endpoints, relays: reach.relays, nowMs: now))
        }
        // The records' sequence numbers must survive a restart: keep our own records with the others.
        let store = store
        for record in dht.publishedRecords { persist { try store.saveRecord(record) } }
    }

    /// The node's reach as the presence policy picks it from its bound address and linked neighbours.
    func currentReach() -> PresencePolicy.Reach {
        let (bound, neighbours) = reachFacts()
        return presence.reach(bound: bound, neighbours: neighbours)
    }

    /// What the presence policy picks the reach from: the bound address and the linked neighbours.
    func reachFacts() -> (bound: DHTEndpoint?, neighbours: [Contact]) {
        let neighbours = links.upPeers.compactMap { address -> Contact? in
            guard let peer = links.upPeer(address), let endpoint = DHTEndpoint(socketAddress: peer.endpoint) else { return nil }
            return Contact(id: NodeID(publicKey: peer.publicKey), endpoint: endpoint)
        }
        return (udpSocket?.localAddress.flatMap(DHTEndpoint.init(socketAddress:)), neighbours)
    }

    /// Runs DHT actions: datagrams out, records persisted, lookups done. A stored record is written on the writer's
    /// thread and the STORE's acknowledgement (the `.send` right after it) goes out once the record is on disk; a
    /// write that fails or finds the writer's queue full drops that acknowledgement, so nothing unsaved is ever
    /// acknowledged (docs/storage.md). Every other action runs at once.
    func runDHT(_ actions: [DHTAction]) {
        var rest = actions[...]
        while let action = rest.popFirst() {
            switch action {
            case .send(let bytes, let to):
                guard let address = try? SocketAddress(dhtEndpoint: to) else { continue }
                sendDatagram(bytes, to: address)
            case .recordStored(let record):
                let acknowledgement: [DHTAction]
                if case .send? = rest.first, let ack = rest.popFirst() { acknowledgement = [ack] } else { acknowledgement = [] }
                let (store, logger, loop) = (store, logger, loop)
                let queued = writer.submit({ try store.saveRecord(record) }, done: { error in
                    if let error {
                        logger.error("database write failed; the record is not acknowledged", metadata: ["error": "\(error)"])
                        return
                    }
                    loop.execute { self.runDHT(acknowledgement) }
                })
                if !queued { logger.warning("database writer busy: a STORE goes unacknowledged", metadata: ["wallet": "\(record.wallet)"]) }
            case .recordDropped(let key):
                let store = store
                persist { try store.deleteRecord(key: key) }
            case .lookupFinished(let id, let outcome):
                lookups.removeValue(forKey: id)?.succeed(outcome)
            case .clockSkew(let report):
                logger.warning("\(report)")
            }
        }
    }

    /// Looks up a wallet's presence record.
    func lookup(_ wallet: WalletAddress) -> EventLoopFuture<LookupOutcome> {
        let (id, actions) = dht.findValue(NodeID.key(for: wallet), nowMs: Self.now())
        let promise = loop.makePromise(of: LookupOutcome.self)
        lookups[id] = promise
        runDHT(actions)
        return promise.futureResult
    }

    /// Writes what changed in the routing table since the last save.
    private func saveContacts() {
        let contacts = Set(dht.contacts)
        let (added, removed, store) = (Array(contacts.subtracting(savedContacts)), Array(savedContacts.subtracting(contacts)), store)
        guard !added.isEmpty || !removed.isEmpty else { return }
        let wallMs = Self.wallNow()
        persist { try store.updateContacts(added: added, removed: removed, nowMs: wallMs) }
        savedContacts = contacts
    }

    /// A write on the writer's thread; a failure, or a full queue, is logged.
    private func persist(_ write: @escaping @Sendable () throws -> Void) {
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

extension SocketAddress {
    init(dhtEndpoint endpoint: DHTEndpoint) throws {
        let host = endpoint.isIPv4 ? endpoint.ip.map(String.init).joined(separator: ".")
                                   : String(endpoint.description.dropFirst().prefix { $0 != "]" })
        try self.init(ipAddress: host, port: Int(endpoint.port))
    }
}
