import MeshIdentity

/// What the shell must do after an input to `DHTNode`.
public enum DHTAction: Sendable {
    case send([UInt8], to: DHTEndpoint)
    /// Persist this record; emitted before the STORE acknowledgement's `.send`, so an acknowledged record is
    /// never lost to a crash.
    case recordStored(PresenceRecord)
    /// Forget the record under this key (expired or withdrawn).
    case recordDropped(NodeID)
    case lookupFinished(LookupID, LookupOutcome)
}

/// The DHT of one node, sans-IO: the message-level core (`DHTProtocol`) behind the authenticated envelope.
/// Every datagram is signed by the sender's node key; the sender's id is recovered from the signature, its
/// timestamp must be within `maxClockSkewMs` of `nowMs`, and a request seen before is dropped. Cheap checks
/// come first (docs/dht.md, "Hostile peers"): a response must match a request in flight to that endpoint, a
/// request must pass its source's rate limits and not be a replay, before any signature is recovered.
/// `nowMs` is wall-clock Unix time in milliseconds (timestamps and record expiry are compared across nodes). The shell owns the UDP socket: DHT datagrams are those whose first byte is `DHTWire.marker`.
public struct DHTNode: Sendable {
    public let identity: PrivateKey
    public private(set) var core: DHTProtocol
    private var replays: ReplayCache
    private var limits: SourceLimits

    public init(identity: PrivateKey, config: DHTConfig, seed: UInt64) {
        self.identity = identity
        self.core = DHTProtocol(localID: NodeID(publicKey: identity.publicKey), config: config, seed: seed)
        self.replays = ReplayCache(capacity: config.replayCacheSize)
        self.limits = SourceLimits(
            address: .init(perSecond: config.requestsPerSecondPerAddress, burst: config.requestBurstPerAddress),
            prefix: .init(perSecond: config.requestsPerSecondPerPrefix, burst: config.requestBurstPerPrefix),
            maxTracked: config.maxTrackedSources)
    }

    public var localID: NodeID { core.localID }
    public var config: DHTConfig { core.config }

    // MARK: inputs

    public mutating func restore(contacts: [Contact], records: [PresenceRecord], nowMs: Int64) {
        core.restore(contacts: contacts, records: records, nowMs: nowMs)
    }

    public mutating func bootstrap(_ endpoints: [DHTEndpoint], nowMs: Int64) -> [DHTAction] {
        seal(core.bootstrap(endpoints, nowMs: nowMs), nowMs: nowMs)
    }

    /// One datagram (first byte `DHTWire.marker`) from `source`. Anything malformed, unsigned, stale or
    /// replayed is dropped and counted.
    public mutating func receive(_ datagram: [UInt8], from source: DHTEndpoint, nowMs: Int64) -> [DHTAction] {
        core.counters.bytesIn += datagram.count
        guard let opened = DHTWire.open(datagram) else {
            core.counters.malformed += 1
            return []
        }
        // Overflow-checked, and `magnitude` not `abs`: a timestamp 2^63 ms before `nowMs` has a skew of Int64.min.
        let skew = opened.timestampMs.subtractingReportingOverflow(nowMs)
        guard !skew.overflow, skew.partialValue.magnitude <= core.config.maxClockSkewMs.magnitude else {
            core.counters.staleTimestamp += 1
            return []
        }
        if opened.packet.message.isResponse {
            guard core.awaits(opened.packet.txid, from: source) else {
                core.counters.unexpectedResponse += 1
                return []
            }
        } else {
            guard limits.admit(source, nowMs: nowMs) else {
                core.counters.rateLimited += 1
                return []
            }
            let key = ReplayCache.Key(txid: opened.packet.txid, tag: opened.replayTag)
            guard replays.insert(key, timestampMs: opened.timestampMs) else {
                core.counters.replayed += 1
                return []
            }
        }
        guard let sender = opened.sender(), sender != localID else {
            core.counters.badSignature += 1
            return []
        }
        return seal(core.handle(opened.packet, from: Contact(id: sender, endpoint: source), nowMs: nowMs), nowMs: nowMs)
    }

    public mutating func tick(nowMs: Int64) -> [DHTAction] {
        replays.expire(before: nowMs - core.config.maxClockSkewMs)
        limits.prune(nowMs: nowMs)
        return seal(core.tick(nowMs: nowMs), nowMs: nowMs)
    }

    public mutating func findValue(_ key: NodeID, nowMs: Int64) -> (LookupID, [DHTAction]) {
        let (id, actions) = core.findValue(key, nowMs: nowMs)
        return (id, seal(actions, nowMs: nowMs))
    }

    public mutating func findNode(_ target: NodeID, nowMs: Int64) -> (LookupID, [DHTAction]) {
        let (id, actions) = core.findNode(target, nowMs: nowMs)
        return (id, seal(actions, nowMs: nowMs))
    }

    public mutating func publish(_ record: PresenceRecord, nowMs: Int64) -> [DHTAction] {
        seal(core.publish(record, nowMs: nowMs), nowMs: nowMs)
    }

    public mutating func publish(wallet: PrivateKey, endpoints: [DHTEndpoint], relays: [Contact], nowMs: Int64) -> [DHTAction] {
        seal(core.publish(wallet: wallet, endpoints: endpoints, relays: relays, nowMs: nowMs), nowMs: nowMs)
    }

    public mutating func withdraw(_ wallet: WalletAddress, nowMs: Int64) -> [DHTAction] {
        seal(core.withdraw(wallet, nowMs: nowMs), nowMs: nowMs)
    }

    // MARK: queries

    public func localRecord(_ key: NodeID) -> PresenceRecord? { core.localRecord(key) }
    public var contacts: [Contact] { core.contacts }
    public var contactCount: Int { core.contactCount }
    public var isJoined: Bool { core.isJoined }
    public var storedRecords: [PresenceRecord] { core.storedRecords }
    public var publishedRecords: [PresenceRecord] { core.publishedRecords }
    public func bucketSnapshot(nowMs: Int64) -> [BucketInfo] { core.bucketSnapshot(nowMs: nowMs) }
    public var counters: DHTCounters { core.counters }

    // MARK: envelope

    private mutating func seal(_ actions: [DHTProtocolAction], nowMs: Int64) -> [DHTAction] {
        actions.map { action in
            switch action {
            case .send(let packet, let to):
                let datagram = DHTWire.seal(packet, timestampMs: nowMs, identity: identity)
                core.counters.bytesOut += datagram.count
                return .send(datagram, to: to)
            case .recordStored(let record): return .recordStored(record)
            case .recordDropped(let key): return .recordDropped(key)
            case .lookupFinished(let id, let outcome): return .lookupFinished(id, outcome)
            }
        }
    }
}
