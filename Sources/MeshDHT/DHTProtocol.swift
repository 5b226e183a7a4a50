import MeshIdentity
import MeshWire

/// What the message-level core asks of its caller: `DHTNode` signs and sends packets; the simulator delivers
/// them as they are.
public enum DHTProtocolAction: Sendable {
    case send(DHTPacket, to: DHTEndpoint)
    /// A record to persist; comes before the STORE acknowledgement that follows it.
    case recordStored(PresenceRecord)
    /// A record expired or was withdrawn: forget it.
    case recordDropped(NodeID)
    case lookupFinished(LookupID, LookupOutcome)
}

/// One k-bucket as `node-ctl routes` shows it.
public struct BucketInfo: Sendable, Codable, Equatable {
    public var index: Int
    public var contacts: [BucketContactInfo]
    /// Contacts waiting in the replacement cache.
    public var replacements: Int
}

public struct BucketContactInfo: Sendable, Codable, Equatable {
    public var id: NodeID
    /// The node's wallet-style address (last 20 bytes of its id).
    public var address: String
    public var endpoint: DHTEndpoint
    public var lastSeenMs: Int64
    public var lastSeenMsAgo: Int64
    public var rttMs: Double?
    /// Answered this node in this run (false for contacts restored from storage until they do).
    public var verified: Bool
    public var failures: Int
}

/// The message-level DHT core of one node, sans-IO: authenticated messages (the sender's id already proven by
/// the envelope layer), calls and `now` in; actions out. `DHTNode` wraps it with signing and verification;
/// the simulator drives it directly. docs/dht.md describes the rules.
public struct DHTProtocol: Sendable {
    public let localID: NodeID
    public let config: DHTConfig
    public internal(set) var counters = DHTCounters()
    /// The wall clock: record expiries and sequences, and clock notices, are wall-clock time; `nowMs` is monotonic.
    public var clock = WallClock()

    private(set) var table: RoutingTable
    private var store: [NodeID: PresenceRecord] = [:]
    /// Who stored each record, and how many records each sending node and source prefix holds.
    private var holdings = Holdings()
    /// Withdrawn keys: records up to this sequence are refused until the withdrawn record would have expired.
    private var tombstones: [NodeID: (sequence: UInt64, expiresAtMs: Int64)] = [:]
    private var own: [NodeID: OwnRecord] = [:]
    private var lookups: [LookupID: Lookup] = [:]
    private var pending: [UInt64: PendingRequest] = [:]
    /// Requesters being verified (a PING in flight).
    private var verifying: Set<NodeID> = []
    private var rng: DHTRandom
    private var nextLookupNumber: UInt64 = 1
    private var nextMaintenanceMs: Int64?
    /// When the node started (refresh ages count from here, not from the epoch).
    private var startedMs: Int64 = 0
    private var join = JoinState()
    /// Endpoints that refused a request of this node for its clock: the skew measured and when (bounded:
    /// `clockRefusalLimit`; forgotten after `clockRefusalMemoryMs` or when the endpoint answers).
    private var clockRefusals: [DHTEndpoint: (skewMs: Int64, atMs: Int64)] = [:]
    static let clockRefusalLimit = 256
    static let clockRefusalMemoryMs: Int64 = 600_000

    /// Where the node joins from and how far the join got (docs/dht.md, "Joining").
    struct JoinState: Sendable {
        var endpoints: [DHTEndpoint] = []
        /// A bootstrap endpoint answered since the current join attempt began.
        var answered = false
        /// A bootstrap endpoint answered and the own-id lookup after it got answers; retries stop, re-joins
        /// happen only while the table is small.
        var joined = false
        /// When the next attempt (or, once joined, the next check of the table's size) is due.
        var nextMs: Int64?
        /// The range of the next wait (doubling).
        var backoffMs: Int64 = 0
    }

    struct OwnRecord: Sendable {
        var record: PresenceRecord
        /// The wallet key when this node signs renewals itself.
        var signer: PrivateKey?
        var nextRepublishMs: Int64
        /// Where the last publish stored it (withdrawals go there).
        var storedOn: [Contact] = []
    }

    struct PendingRequest: Sendable {
        enum Purpose: Sendable {
            case lookup(LookupID)
            case livenessCheck
            /// A PING to an unknown requester: it enters the table when it answers.
            case verification
            case bootstrap
            case store(NodeID)
        }
        let to: DHTEndpoint
        let expectedID: NodeID?
        let sentMs: Int64
        let deadlineMs: Int64
        let purpose: Purpose
        /// A clock notice for this request was counted (one per request).
        var refusedForClock = false
    }

    /// A request of this node refused for its clock: the node it was meant for (when known) and the skew.
    public struct ClockRefusal: Sendable, Equatable {
        public var node: NodeID?
        /// This node's clock minus the refusing node's.
        public var skewMs: Int64
    }

    public init(localID: NodeID, config: DHTConfig, seed: UInt64) {
        precondition(config.k >= 1 && config.k <= DHTWire.maxContacts, "k must be 1…\(DHTWire.maxContacts)")
        self.localID = localID
        self.config = config
        self.table = RoutingTable(localID: localID, config: config)
        self.rng = DHTRandom(seed: seed)
    }

    // MARK: inputs

    /// Contacts and records from storage: contacts go into buckets (unverified), valid records into the store.
    public mutating func restore(contacts: [Contact], records: [PresenceRecord], nowMs: Int64) {
        for contact in contacts where contact.id != localID { table.restore(contact, nowMs: nowMs) }
        for record in records where record.validate(nowMs: clock.wall(nowMs), config: config) == nil {
            if let existing = store[record.key], existing.sequence >= record.sequence { continue }
            store[record.key] = record
            holdings.set(record.key, to: Holdings.unattributed)
        }
        scheduleMaintenance(nowMs: nowMs)
    }

    /// Joins the network: asks each bootstrap endpoint for the nodes closest to this one and looks up its own
    /// id, then refreshes the farther buckets. Lookups that have no candidate yet (an empty table) wait for the
    /// bootstrap answers, which feed every running lookup. `tick` repeats the join with backoff until a
    /// bootstrap endpoint answered and the own-id lookup got answers, and again later while the table stays
    /// small (docs/dht.md, "Joining"); call it once.
    public mutating func bootstrap(_ endpoints: [DHTEndpoint], nowMs: Int64) -> [DHTProtocolAction] {
        scheduleMaintenance(nowMs: nowMs)
        join = JoinState(endpoints: endpoints)
        var actions: [DHTProtocolAction] = []
        attemptJoin(nowMs: nowMs, actions: &actions)
        return actions
    }

    /// Whether a bootstrap endpoint answered and the own-id lookup after it got answers.
    public var isJoined: Bool { join.joined }

    /// One authenticated message from `sender`.
    public mutating func handle(_ packet: DHTPacket, from sender: Contact, nowMs: Int64) -> [DHTProtocolAction] {
        counters.messagesIn += 1
        guard sender.id != localID else {
            counters.badSignature += 1
            return []
        }
        var actions: [DHTProtocolAction] = []
        if packet.message.isResponse {
            handleResponse(packet, from: sender, nowMs: nowMs, actions: &actions)
        } else {
            handleRequest(packet, from: sender, nowMs: nowMs, actions: &actions)
        }
        return actions
    }

    /// Timeouts, then housekeeping when due: expiry, renewal and republishing of own records, bucket refresh.
    public mutating func tick(nowMs: Int64) -> [DHTProtocolAction] {
        var actions: [DHTProtocolAction] = []
        let expired = pending.filter { $0.value.deadlineMs <= nowMs }
        for (txid, request) in expired.sorted(by: { ($0.value.deadlineMs, $0.key) < ($1.value.deadlineMs, $1.key) }) {
            pending[txid] = nil
            counters.timeouts += 1
            if let id = request.expectedID { table.failed(id) }
            switch request.purpose {
            case .verification:
                if let id = request.expectedID { verifying.remove(id) }
            case .lookup(let lookupID):
                if let id = request.expectedID { lookups[lookupID]?.failed(id) }
                advance(lookupID, nowMs: nowMs, actions: &actions)
            case .bootstrap where !isBootstrapping:
                // No bootstrap node answered: lookups waiting for one end now.
                for id in lookups.keys.sorted(by: { $0.rawValue < $1.rawValue }) { advance(id, nowMs: nowMs, actions: &actions) }
            case .bootstrap, .livenessCheck, .store:
                break
            }
        }
        if let due = nextMaintenanceMs, nowMs >= due {
            nextMaintenanceMs = nowMs + config.maintenanceIntervalMs
            maintain(nowMs: nowMs, actions: &actions)
        }
        if let due = join.nextMs, nowMs >= due { joinTimer(nowMs: nowMs, actions: &actions) }
        return actions
    }

    /// When `tick` next has work: the earliest request deadline, join retry or housekeeping time.
    public var nextTimeoutMs: Int64? {
        var next = min(nextMaintenanceMs ?? .max, join.nextMs ?? .max)
        for request in pending.values { next = min(next, request.deadlineMs) }
        return next == .max ? nil : next
    }

    /// A request with this txid is in flight to `endpoint` (checked before a response's signature is).
    public func awaits(_ txid: UInt64, from endpoint: DHTEndpoint) -> Bool { pending[txid]?.to == endpoint }

    /// A clock notice from `endpoint` (docs/dht.md, "Clock skew"): when it echoes a request of ours in flight
    /// there, counted once and remembered for lookup outcomes; otherwise an unexpected response, nil. The
    /// request itself stays in flight (the notice is unsigned: it may only be logged and counted).
    public mutating func clockRefused(_ txid: UInt64, from endpoint: DHTEndpoint, theirClockMs: Int64,
                                      nowMs: Int64) -> ClockRefusal? {
        guard var request = pending[txid], request.to == endpoint, !request.refusedForClock else {
            counters.unexpectedResponse += 1
            return nil
        }
        request.refusedForClock = true
        pending[txid] = request
        counters.clockNoticesReceived += 1
        let skew = clock.wall(nowMs).subtractingReportingOverflow(theirClockMs)
        let skewMs = skew.overflow ? (theirClockMs < 0 ? .max : .min) : skew.partialValue
        if clockRefusals[endpoint] != nil || clockRefusals.count < Self.clockRefusalLimit {
            clockRefusals[endpoint] = (skewMs, nowMs)
        }
        return ClockRefusal(node: request.expectedID, skewMs: skewMs)
    }

    /// Looks up the record stored under `key` (answered at once when this node holds it).
    public mutating func findValue(_ key: NodeID, nowMs: Int64) -> (LookupID, [DHTProtocolAction]) {
        if let record = liveRecord(key, nowMs: nowMs) {
            let id = newLookupID()
            counters.lookupsStarted += 1
            counters.lookupsFinished += 1
            let outcome = LookupOutcome(target: key, record: record, closest: [], rounds: 0, messages: 0, elapsedMs: 0)
            return (id, [.lookupFinished(id, outcome)])
        }
        var actions: [DHTProtocolAction] = []
        let id = startLookup(key, kind: .findValue, nowMs: nowMs, actions: &actions)
        return (id, actions)
    }

    /// Looks up the k nodes closest to `target`.
    public mutating func findNode(_ target: NodeID, nowMs: Int64) -> (LookupID, [DHTProtocolAction]) {
        var actions: [DHTProtocolAction] = []
        let id = startLookup(target, kind: .findNode, nowMs: nowMs, actions: &actions)
        return (id, actions)
    }

    /// Publishes a record of a wallet this node hosts: finds the k closest nodes to its key and STOREs it on
    /// them; stores it again every `republishMs` until it expires.
    public mutating func publish(_ record: PresenceRecord, nowMs: Int64) -> [DHTProtocolAction] {
        own[record.key] = OwnRecord(record: record, signer: own[record.key]?.signer, nextRepublishMs: nowMs + config.republishMs)
        var actions: [DHTProtocolAction] = []
        startLookup(record.key, kind: .publish(record), nowMs: nowMs, actions: &actions)
        scheduleMaintenance(nowMs: nowMs)
        return actions
    }

    /// Signs and publishes a record for `wallet` (expiring after `recordTTLms`) and keeps it alive: re-signed
    /// with a higher sequence when less than `renewBeforeMs` is left. The sequence is the larger of the last
    /// one + 1 and the wall clock, so it grows across restarts without being stored.
    public mutating func publish(wallet: PrivateKey, endpoints: [DHTEndpoint], relays: [Contact], nowMs: Int64)
        -> [DHTProtocolAction]
    {
        let key = NodeID.key(for: wallet.address)
        let previous = max(own[key]?.record.sequence ?? 0, store[key]?.sequence ?? 0, tombstones[key]?.sequence ?? 0)
        let record = PresenceRecord.make(wallet: wallet, homeNode: localID, endpoints: endpoints, relays: relays,
                                         sequence: max(previous + 1, UInt64(max(clock.wall(nowMs), 0))),
                                         expiresAtMs: clock.wall(nowMs) + config.recordTTLms)
        own[key] = OwnRecord(record: record, signer: wallet, nextRepublishMs: nowMs)
        return publish(record, nowMs: nowMs)
    }

    /// Stops publishing `wallet` and asks the nodes that stored its record to drop it (one-way WITHDRAW
    /// messages, honoured only from the record's home node and for its current sequence). Best effort.
    public mutating func withdraw(_ wallet: WalletAddress, nowMs: Int64) -> [DHTProtocolAction] {
        let key = NodeID.key(for: wallet)
        guard let entry = own.removeValue(forKey: key) else { return [] }
        var actions: [DHTProtocolAction] = []
        for contact in entry.storedOn {
            let packet = DHTPacket(txid: rng.next(), message: .withdraw(key: key, sequence: entry.record.sequence))
            counters.messagesOut += 1
            actions.append(.send(packet, to: contact.endpoint))
        }
        if let held = store[key], held.homeNode == localID {
            dropRecord(key, tombstone: (held.sequence, held.expiresAtMs), actions: &actions)
        }
        return actions
    }

    // MARK: queries

    public func localRecord(_ key: NodeID) -> PresenceRecord? { store[key] }

    public var contacts: [Contact] { table.allEntries.map(\.entry.contact) }
    /// How many contacts the table holds (without building `contacts`).
    public var contactCount: Int { table.count }

    public var storedRecords: [PresenceRecord] { store.values.sorted { $0.key < $1.key } }

    /// Records this node publishes (for persistence of the hosted wallets' sequence numbers).
    public var publishedRecords: [PresenceRecord] { own.values.map(\.record).sorted { $0.key < $1.key } }

    public func bucketSnapshot(nowMs: Int64) -> [BucketInfo] {
        table.buckets.indices.compactMap { index in
            let bucket = table.buckets[index]
            guard !bucket.entries.isEmpty || !bucket.replacements.isEmpty else { return nil }
            let contacts = bucket.entries.reversed().map { entry in
                BucketContactInfo(id: entry.contact.id, address: entry.contact.id.address.checksummed,
                                  endpoint: entry.contact.endpoint, lastSeenMs: entry.lastSeenMs,
                                  lastSeenMsAgo: nowMs - entry.lastSeenMs, rttMs: entry.rttMs,
                                  verified: entry.verified, failures: entry.failures)
            }
            return BucketInfo(index: index, contacts: contacts, replacements: bucket.replacements.count)
        }
    }

    // MARK: requests from others

    /// Answers a request. A known sender counts as seen (its endpoint does not move); an unknown one is
    /// verified by a PING and enters the table only when it answers. A sender not verified at this address
    /// gets no more bytes back (answer and PING together) than its request carried.
    private mutating func handleRequest(_ packet: DHTPacket, from sender: Contact, nowMs: Int64,
                                        actions: inout [DHTProtocolAction]) {
        let known = table.contains(sender.id)
        if known { heard(sender, confirmed: false, rttMs: nil, nowMs: nowMs, actions: &actions) }
        let proven = known && table.isVerified(sender.id, at: sender.endpoint)
        var budget = proven ? Int.max : DHTWire.size(of: packet)
        if let reply = reply(to: packet, from: sender, nowMs: nowMs, actions: &actions) {
            let answer = DHTPacket(txid: packet.txid, message: proven ? reply : fitted(reply, into: budget, excluding: sender.id))
            let size = DHTWire.size(of: answer)
            let fits = size <= budget
            if fits {
                budget -= size
                counters.messagesOut += 1
                actions.append(.send(answer, to: sender.endpoint))
            }
            if !fits || answer.message != reply { counters.trimmedReplies += 1 }
        }
        if !known, budget >= DHTWire.paddedPingBytes, verifying.count < config.maxPendingVerifications,
           verifying.insert(sender.id).inserted {
            actions.append(request(.ping, to: sender.endpoint, expecting: sender.id, purpose: .verification, nowMs: nowMs))
        }
    }

    /// An answer cut to `budget` bytes: NODES keeps its closest contacts that fit; a VALUE that does not fit
    /// becomes NODES (the requester did not pad its request, so it gets what fits).
    private func fitted(_ reply: DHTMessage, into budget: Int, excluding requester: NodeID) -> DHTMessage {
        let contacts: [Contact]
        switch reply {
        case .nodes(let all): contacts = all
        case .value(let record) where DHTWire.size(of: DHTPacket(txid: 0, message: reply)) > budget:
            contacts = closestForReply(to: record.key, excluding: requester)
        default: return reply
        }
        var size = DHTWire.overheadBytes + 1
        let kept = contacts.prefix { contact in
            size += NodeID.byteCount + contact.endpoint.wireBytes
            return size <= budget
        }
        return .nodes(Array(kept))
    }

    /// The answer to a request (nil for one-way messages); STORE and WITHDRAW take effect here.
    private mutating func reply(to packet: DHTPacket, from sender: Contact, nowMs: Int64,
                                actions: inout [DHTProtocolAction]) -> DHTMessage? {
        let reply: DHTMessage
        switch packet.message {
        case .ping:
            reply = .pong(observed: sender.endpoint)
        case .findNode(let target):
            reply = .nodes(closestForReply(to: target, excluding: sender.id))
        case .findValue(let key):
            if let record = liveRecord(key, nowMs: nowMs) {
                reply = .value(record)
            } else {
                reply = .nodes(closestForReply(to: key, excluding: sender.id))
            }
        case .store(let record):
            reply = .stored(accept(record, from: Holdings.Origin(node: sender.id, prefix: sender.endpoint.prefixKey),
                                   nowMs: nowMs, actions: &actions))
        case .withdraw(let key, let sequence):
            if let held = store[key], held.homeNode == sender.id, held.sequence == sequence {
                dropRecord(key, tombstone: (held.sequence, held.expiresAtMs), actions: &actions)
            }
            return nil
        case .pong, .nodes, .value, .stored:
            return nil
        }
        return reply
    }

    private func closestForReply(to target: NodeID, excluding id: NodeID) -> [Contact] {
        Array(table.closest(to: target, count: config.k + 1, healthyOnly: true).lazy.filter { $0.id != id }.prefix(config.k))
    }

    /// STORE, cheap checks first (docs/dht.md, "Storage quotas"): an identical record is acknowledged without
    /// work; sequence order (a tombstone counts as the sequence it withdrew) and, for a new key, the sender's
    /// quotas before the signature is checked; then room, made by evicting from the heaviest source prefix.
    private mutating func accept(_ record: PresenceRecord, from origin: Holdings.Origin, nowMs: Int64,
                                 actions: inout [DHTProtocolAction]) -> StoreResult {
        let key = record.key
        let wallMs = clock.wall(nowMs)
        if let existing = store[key], existing == record, existing.expiresAtMs > wallMs { return .stored }
        if let tombstone = tombstones[key], record.sequence <= tombstone.sequence { return .stale }
        let existing = store[key]
        if let existing, existing.expiresAtMs > wallMs, existing.sequence >= record.sequence { return .stale }
        if existing == nil, origin != Holdings.unattributed,
           holdings.count(node: origin.node) >= config.maxRecordsPerNode
            || holdings.count(prefix: origin.prefix) >= config.maxRecordsPerPrefix {
            counters.quotaExceeded += 1
            return .full
        }
        if let refusal = record.validate(nowMs: wallMs, config: config) {
            counters.refusedRecords[refusal, default: 0] += 1
            return .refused(refusal)
        }
        if existing == nil, store.count >= config.maxStoredRecords {
            guard let victim = holdings.evictionCandidate(for: origin.prefix) else {
                counters.storeFull += 1
                return .full
            }
            counters.evicted += 1
            dropRecord(victim, tombstone: nil, actions: &actions)
        }
        store[key] = record
        holdings.set(key, to: origin)
        actions.append(.recordStored(record))
        return .stored
    }

    private func liveRecord(_ key: NodeID, nowMs: Int64) -> PresenceRecord? {
        guard let record = store[key], record.expiresAtMs > clock.wall(nowMs) else { return nil }
        return record
    }

    private mutating func dropRecord(_ key: NodeID, tombstone: (UInt64, Int64)?, actions: inout [DHTProtocolAction]) {
        store[key] = nil
        holdings.remove(key)
        if let tombstone { tombstones[key] = tombstone }
        actions.append(.recordDropped(key))
    }

    // MARK: responses

    private mutating func handleResponse(_ packet: DHTPacket, from sender: Contact, nowMs: Int64,
                                         actions: inout [DHTProtocolAction]) {
        guard let request = pending[packet.txid], request.to == sender.endpoint,
              request.expectedID == nil || request.expectedID == sender.id,
              Self.fits(packet.message, request.purpose)
        else {
            counters.unexpectedResponse += 1
            return
        }
        pending[packet.txid] = nil
        clockRefusals[sender.endpoint] = nil
        heard(sender, confirmed: true, rttMs: Double(nowMs - request.sentMs), nowMs: nowMs, actions: &actions)
        switch request.purpose {
        case .verification:
            verifying.remove(sender.id)
        case .livenessCheck, .store:
            break
        case .bootstrap:
            guard case .nodes(let contacts) = packet.message else { return }
            join.answered = true
            let learned = [sender] + contacts.filter { $0.id != localID }
            for id in lookups.keys.sorted(by: { $0.rawValue < $1.rawValue }) {
                lookups[id]?.add(learned, hop: 1)
                advance(id, nowMs: nowMs, actions: &actions)
            }
        case .lookup(let lookupID):
            guard var lookup = lookups.removeValue(forKey: lookupID) else { return }
            switch packet.message {
            case .nodes(let contacts):
                lookup.answered(sender.id, contacts: contacts.filter { $0.id != localID })
            case .value(let record):
                if let refusal = record.key == lookup.target ? record.validate(nowMs: clock.wall(nowMs), config: config) : .wrongKey {
                    counters.refusedRecords[refusal, default: 0] += 1
                    lookup.failed(sender.id)
                } else {
                    lookup.answered(sender.id, contacts: [], record: record)
                }
            default:
                break
            }
            proceed(&lookup, nowMs: nowMs, actions: &actions)
        }
    }

    private static func fits(_ message: DHTMessage, _ purpose: PendingRequest.Purpose) -> Bool {
        switch (message, purpose) {
        case (.pong, .livenessCheck), (.pong, .verification), (.nodes, .bootstrap), (.nodes, .lookup), (.value, .lookup), (.stored, .store): true
        default: false
        }
    }

    /// A node was heard from: update the table, and ping the least recently seen entry of a full bucket.
    private mutating func heard(_ contact: Contact, confirmed: Bool, rttMs: Double?, nowMs: Int64,
                                actions: inout [DHTProtocolAction]) {
        switch table.observe(contact, nowMs: nowMs, rttMs: rttMs, confirmed: confirmed) {
        case .cached(let check?):
            actions.append(request(.ping, to: check.endpoint, expecting: check.id, purpose: .livenessCheck, nowMs: nowMs))
        case .prefixLimited:
            counters.prefixLimited += 1
        case .updated, .inserted, .cached(nil), .ignored:
            break
        }
    }

    // MARK: lookups

    private mutating func newLookupID() -> LookupID {
        defer { nextLookupNumber += 1 }
        return LookupID(rawValue: nextLookupNumber)
    }

    @discardableResult
    private mutating func startLookup(_ target: NodeID, kind: Lookup.Kind, nowMs: Int64,
                                      actions: inout [DHTProtocolAction]) -> LookupID {
        let id = newLookupID()
        counters.lookupsStarted += 1
        table.markLookup(target, nowMs: nowMs)
        var lookup = Lookup(id: id, target: target, kind: kind, localID: localID,
                            seeds: table.closest(to: target, count: config.k), nowMs: nowMs, config: config)
        proceed(&lookup, nowMs: nowMs, actions: &actions)
        return id
    }

    /// Bootstrap requests are outstanding.
    private var isBootstrapping: Bool {
        pending.values.contains { if case .bootstrap = $0.purpose { true } else { false } }
    }

    private mutating func advance(_ id: LookupID, nowMs: Int64, actions: inout [DHTProtocolAction]) {
        guard var lookup = lookups.removeValue(forKey: id) else { return }
        proceed(&lookup, nowMs: nowMs, actions: &actions)
    }

    /// Sends what a lookup asks for and keeps it; when it has finished, acts on the outcome. (Lookups are taken
    /// out of `lookups` while edited, so their candidate arrays are never copied.)
    private mutating func proceed(_ lookup: inout Lookup, nowMs: Int64, actions: inout [DHTProtocolAction]) {
        let id = lookup.id
        if lookup.candidates.isEmpty, isBootstrapping {
            lookups[id] = lookup
            return
        }
        let message: DHTMessage = lookup.isValueLookup ? .findValue(key: lookup.target) : .findNode(target: lookup.target)
        for contact in lookup.next() {
            actions.append(request(message, to: contact.endpoint, expecting: contact.id, purpose: .lookup(id), nowMs: nowMs))
        }
        guard lookup.isFinished else {
            lookups[id] = lookup
            return
        }
        counters.lookupsFinished += 1
        var outcome = lookup.outcome(nowMs: nowMs)
        let refusals = clockRefusals.values.filter { nowMs - $0.atMs < Self.clockRefusalMemoryMs }
        outcome.clockRefusals = refusals.count
        outcome.clockSkewMs = refusals.max { ($0.atMs, $0.skewMs) < ($1.atMs, $1.skewMs) }?.skewMs
        switch lookup.kind {
        case .findNode, .findValue:
            if outcome.closest.isEmpty, outcome.record == nil { lookupStalled(nowMs: nowMs) }
            actions.append(.lookupFinished(id, outcome))
        case .join:
            if !outcome.closest.isEmpty, join.answered || join.endpoints.isEmpty, !join.joined {
                join.joined = true
                join.backoffMs = 0
                scheduleJoin(nowMs: nowMs)
            }
            guard config.refreshBucketsOnJoin, let nearest = table.lowestNonEmptyBucket, nearest < 255 else { return }
            for index in (nearest + 1)...255 where table.buckets[index].entries.count < config.k {
                startLookup(localID.randomID(inBucket: index, using: &rng), kind: .refresh, nowMs: nowMs,
                            actions: &actions)
            }
        case .refresh:
            break
        case .publish(let record):
            storeOn(outcome.closest, record: record, nowMs: nowMs, actions: &actions)
        }
    }

    private mutating func storeOn(_ closest: [Contact], record: PresenceRecord, nowMs: Int64,
                                  actions: inout [DHTProtocolAction]) {
        let key = record.key
        own[key]?.storedOn = closest
        for contact in closest {
            actions.append(request(.store(record), to: contact.endpoint, expecting: contact.id, purpose: .store(key), nowMs: nowMs))
        }
        // This node keeps a copy too when it is itself among the k closest.
        let isAmongClosest = closest.count < config.k
            || closest.last.map { localID.distance(to: key) < $0.id.distance(to: key) } == true
        if isAmongClosest { _ = accept(record, from: Holdings.unattributed, nowMs: nowMs, actions: &actions) }
    }

    private mutating func request(_ message: DHTMessage, to endpoint: DHTEndpoint, expecting id: NodeID?,
                                  purpose: PendingRequest.Purpose, nowMs: Int64) -> DHTProtocolAction {
        var txid = rng.next()
        while pending[txid] != nil { txid = rng.next() }
        pending[txid] = PendingRequest(to: endpoint, expectedID: id, sentMs: nowMs,
                                       deadlineMs: nowMs + config.requestTimeoutMs, purpose: purpose)
        counters.messagesOut += 1
        return .send(DHTPacket(txid: txid, message: message, padding: DHTWire.padding(for: message)), to: endpoint)
    }

    // MARK: joining

    /// One join attempt: FIND_NODE(own id) to every bootstrap endpoint and an own-id lookup (which refreshes
    /// the farther buckets when it ends); the next attempt or check is scheduled.
    private mutating func attemptJoin(nowMs: Int64, actions: inout [DHTProtocolAction]) {
        join.answered = false
        for endpoint in join.endpoints {
            actions.append(request(.findNode(target: localID), to: endpoint, expecting: nil, purpose: .bootstrap, nowMs: nowMs))
        }
        startLookup(localID, kind: .join, nowMs: nowMs, actions: &actions)
        scheduleJoin(nowMs: nowMs)
    }

    /// The next join timer: a wait drawn from the upper half of the current range, which then doubles (up to
    /// `joinRetryMaxMs` while joining, `rejoinMaxMs` once joined).
    private mutating func scheduleJoin(nowMs: Int64) {
        let range = max(join.backoffMs, config.joinRetryMinMs)
        let wait = range / 2 + Int64(rng.next() % UInt64(range / 2 + 1))
        join.nextMs = nowMs + wait
        join.backoffMs = min(range * 2, join.joined ? config.rejoinMaxMs : config.joinRetryMaxMs)
    }

    /// The join timer fired: retry while not joined; once joined, join again only while the table is smaller
    /// than k, ever less often.
    private mutating func joinTimer(nowMs: Int64, actions: inout [DHTProtocolAction]) {
        guard join.joined else { return attemptJoin(nowMs: nowMs, actions: &actions) }
        guard table.count < config.k else {
            join.nextMs = nowMs + config.rejoinMaxMs
            return
        }
        attemptJoin(nowMs: nowMs, actions: &actions)
    }

    /// A lookup ended without a single answer: the table is stale or the node is cut off. Join again now, and
    /// retry as after a start until a bootstrap endpoint answers (only the first stall after a join acts).
    private mutating func lookupStalled(nowMs: Int64) {
        guard join.joined else { return }
        join.joined = false
        join.backoffMs = 0
        join.nextMs = nowMs
    }

    // MARK: housekeeping

    private mutating func scheduleMaintenance(nowMs: Int64) {
        guard nextMaintenanceMs == nil else { return }
        startedMs = nowMs
        nextMaintenanceMs = nowMs + config.maintenanceIntervalMs
    }

    private mutating func maintain(nowMs: Int64, actions: inout [DHTProtocolAction]) {
        let wallMs = clock.wall(nowMs)
        for key in store.filter({ $0.value.expiresAtMs <= wallMs }).keys.sorted() {
            dropRecord(key, tombstone: nil, actions: &actions)
        }
        tombstones = tombstones.filter { $0.value.expiresAtMs > wallMs }
        clockRefusals = clockRefusals.filter { nowMs - $0.value.atMs < Self.clockRefusalMemoryMs }
        for key in own.keys.sorted() {
            guard let entry = own[key] else { continue }
            if let signer = entry.signer, entry.record.expiresAtMs - wallMs <= config.renewBeforeMs {
                actions += publish(wallet: signer, endpoints: entry.record.endpoints, relays: entry.record.relays, nowMs: nowMs)
            } else if entry.record.expiresAtMs <= wallMs {
                own[key] = nil
            } else if nowMs >= entry.nextRepublishMs {
                actions += publish(entry.record, nowMs: nowMs)
            }
        }
        guard let nearest = table.lowestNonEmptyBucket else { return }
        for index in nearest...255
        where nowMs - max(table.buckets[index].lastLookupMs, startedMs) >= config.bucketRefreshMs {
            let target = index == nearest ? localID : localID.randomID(inBucket: index, using: &rng)
            table.setLastLookup(bucket: index, nowMs: nowMs)
            startLookup(target, kind: .refresh, nowMs: nowMs, actions: &actions)
        }
    }
}

/// Who stored the records a node holds, for storage quotas and eviction (docs/dht.md, "Storage quotas").
struct Holdings: Sendable {
    struct Origin: Hashable, Sendable {
        /// The sending node (nil for records restored from storage or stored by this node itself).
        let node: NodeID?
        let prefix: SourceKey
    }

    /// Records restored from storage and this node's own copies: one group, evicted like any source.
    /// A prefix key no address produces (IPv4 prefixes have high = 0), so no real source shares its quota.
    static let unattributed = Origin(node: nil, prefix: SourceKey(high: .max, low: .max, isIPv4: true))

    private var origins: [NodeID: Origin] = [:]
    private var byNode: [NodeID: Int] = [:]
    private var byPrefix: [SourceKey: Set<NodeID>] = [:]

    func count(node: NodeID?) -> Int { node.map { byNode[$0, default: 0] } ?? 0 }
    func count(prefix: SourceKey) -> Int { byPrefix[prefix]?.count ?? 0 }

    mutating func set(_ key: NodeID, to origin: Origin) {
        remove(key)
        origins[key] = origin
        if let node = origin.node { byNode[node, default: 0] += 1 }
        byPrefix[origin.prefix, default: []].insert(key)
    }

    mutating func remove(_ key: NodeID) {
        guard let origin = origins.removeValue(forKey: key) else { return }
        if let node = origin.node {
            let left = byNode[node, default: 1] - 1
            byNode[node] = left > 0 ? left : nil
        }
        byPrefix[origin.prefix]?.remove(key)
        if byPrefix[origin.prefix]?.isEmpty == true { byPrefix[origin.prefix] = nil }
    }

    /// A record of the prefix holding the most, when that is more than `prefix` holds (so a full store keeps
    /// taking newcomers from sources holding less, and shares even out); nil otherwise.
    func evictionCandidate(for prefix: SourceKey) -> NodeID? {
        guard let heaviest = byPrefix.max(by: { $0.value.count < $1.value.count }),
              heaviest.value.count > count(prefix: prefix)
        else { return nil }
        return heaviest.value.first
    }
}
