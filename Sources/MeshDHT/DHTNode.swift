import MeshIdentity
import MeshWire

/// What the shell must do after an input to `DHTNode`.
public enum DHTAction: Sendable {
    case send([UInt8], to: DHTEndpoint)
    /// Persist this record; emitted before the STORE acknowledgement's `.send`, so an acknowledged record is
    /// never lost to a crash.
    case recordStored(PresenceRecord)
    /// Forget the record under this key (expired or withdrawn).
    case recordDropped(NodeID)
    case lookupFinished(LookupID, LookupOutcome)
    /// A clock-skew refusal to log (at most once a minute per endpoint and direction).
    case clockSkew(ClockSkewReport)
}

/// A DHT request refused because the clocks of two nodes differ by more than `maxClockSkewMs`
/// (docs/dht.md, "Clock skew"); its description is the log line.
public struct ClockSkewReport: Sendable, Equatable, CustomStringConvertible {
    public enum Direction: Sendable, Equatable {
        /// This node refused a request from `endpoint`; `skewMs` is the request's timestamp minus this node's
        /// clock (positive: the sender's clock is ahead).
        case refusedTheirs
        /// `endpoint` refused a request of this node; `skewMs` is this node's clock minus the clock its notice
        /// carried (positive: this node's clock is ahead; includes the one-way delay).
        case refusedOurs
    }
    public var direction: Direction
    public var endpoint: DHTEndpoint
    /// The other node, when known (the request's signer, or the node a request of ours was meant for).
    public var node: NodeID?
    public var skewMs: Int64
    public var toleranceMs: Int64

    public var description: String {
        let who = node.map { "\($0.address.checksummed) at \(endpoint)" } ?? "at \(endpoint)"
        switch direction {
        case .refusedTheirs:
            return "DHT request from \(who) refused: its clock is \(Self.describe(skewMs)) ours (accepted: ±\(toleranceMs / 1000) s)"
        case .refusedOurs:
            return "DHT node \(who) refused our request: our clock is \(Self.describe(skewMs)) its clock"
        }
    }

    /// "92 s ahead of" / "90 s behind".
    static func describe(_ skewMs: Int64) -> String {
        "\((skewMs.magnitude + 500) / 1000) s \(skewMs >= 0 ? "ahead of" : "behind")"
    }
}

/// The DHT of one node, sans-IO: the message-level core (`DHTProtocol`) behind the authenticated envelope.
/// Every datagram is signed by the sender's node key; the sender's id is recovered from the signature, its
/// timestamp must be within `maxClockSkewMs` of `nowMs`, and a request seen before is dropped. Cheap checks
/// come first (docs/dht.md, "Hostile peers"): a response must match a request in flight to that endpoint, a
/// request must pass its source's rate limits and not be a replay, before any signature is recovered.
/// `nowMs` is the node's monotonic clock in milliseconds (timeouts, rate limits, refresh); what is compared across
/// nodes (signed timestamps, record expiry) is wall-clock Unix time, `clock.wall(nowMs)`. The shell owns the UDP
/// socket: DHT datagrams are those whose first byte is `DHTWire.marker`.
public struct DHTNode: Sendable {
    public let identity: PrivateKey
    public private(set) var core: DHTProtocol
    private var replays: ReplayCache
    private var limits: SourceLimits
    private let jar: CookieJar
    /// Signature recoveries left for requests without a cookie, from unproven and from proven addresses.
    private var unprovenChecks: TokenBucket
    private var provenChecks: TokenBucket
    /// The rate limits of cookied requests (the same rates as `limits`, separate buckets).
    private var cookiedLimits: SourceLimits
    /// Endpoints that answered a request of ours (they receive at their address), and when.
    private var proven: [DHTEndpoint: Int64] = [:]
    /// Cookies other nodes handed this node, by their endpoint.
    private var cookies: [DHTEndpoint: (cookie: Cookie, atMs: Int64)] = [:]
    /// Requests of ours in flight, sealed, so one can be sent again with a cookie (once).
    private var sentRequests: [UInt64: (to: DHTEndpoint, datagram: [UInt8], atMs: Int64, cookieTried: Bool)] = [:]
    /// When a clock-skew refusal was last logged, per endpoint and direction (bounded: `skewLogLimit`).
    private var skewLogged: [SkewLogKey: Int64] = [:]
    private static let skewLogLimit = 1_024
    private static let skewLogIntervalMs: Int64 = 60_000

    private struct SkewLogKey: Hashable, Sendable {
        let endpoint: DHTEndpoint
        let ours: Bool
    }

    public init(identity: PrivateKey, config: DHTConfig, seed: UInt64) {
        self.identity = identity
        self.core = DHTProtocol(localID: NodeID(publicKey: identity.publicKey), config: config, seed: seed)
        self.replays = ReplayCache(capacity: config.replayCacheSize)
        self.limits = SourceLimits(
            address: .init(perSecond: config.requestsPerSecondPerAddress, burst: config.requestBurstPerAddress),
            prefix: .init(perSecond: config.requestsPerSecondPerPrefix, burst: config.requestBurstPerPrefix),
            maxTracked: config.maxTrackedSources)
        jar = CookieJar(seed: seed ^ 0x636f_6f6b_6965_7321)
        unprovenChecks = TokenBucket(Self.unprovenRate(config), nowMs: 0)
        provenChecks = TokenBucket(Self.provenRate(config), nowMs: 0)
        cookiedLimits = limits
    }

    private static func unprovenRate(_ config: DHTConfig) -> TokenBucket.Rate {
        TokenBucket.Rate(perSecond: config.unprovenChecksPerSecond, burst: config.unprovenCheckBurst)
    }

    private static func provenRate(_ config: DHTConfig) -> TokenBucket.Rate {
        TokenBucket.Rate(perSecond: config.provenChecksPerSecond, burst: config.provenChecksPerSecond)
    }

    public var localID: NodeID { core.localID }

    /// When `tick` next has something to do (a request deadline, a join retry, housekeeping).
    public var nextDeadline: Int64? { core.nextTimeoutMs }

    /// The wall clock the envelope's timestamps and the core's record expiry are read from (the shell keeps it current).
    public var clock: WallClock {
        get { core.clock }
        set { core.clock = newValue }
    }
    public var config: DHTConfig { core.config }

    // MARK: inputs

    public mutating func restore(contacts: [Contact], records: [PresenceRecord], nowMs: Int64) {
        core.restore(contacts: contacts, records: records, nowMs: nowMs)
    }

    public mutating func bootstrap(_ endpoints: [DHTEndpoint], nowMs: Int64) -> [DHTAction] {
        seal(core.bootstrap(endpoints, nowMs: nowMs), nowMs: nowMs)
    }

    /// One datagram (first byte `DHTWire.marker`) from `source`. Anything malformed, unsigned, stale or
    /// replayed is dropped and counted; a request refused for its timestamp is answered with a clock notice.
    public mutating func receive(_ datagram: [UInt8], from source: DHTEndpoint, nowMs: Int64) -> [DHTAction] {
        core.counters.bytesIn += datagram.count
        if let notice = DHTWire.ClockNotice(parsing: datagram) { return receive(notice, from: source, nowMs: nowMs) }
        if let reply = DHTWire.CookieReply(parsing: datagram) { return receive(reply, from: source, nowMs: nowMs) }
        var signed = datagram
        var cookied = false
        var staleCookie = false
        if let (cookie, inner) = DHTWire.Cookied.unwrap(datagram) {
            signed = inner
            cookied = jar.isValid(cookie, for: source, nowMs: nowMs)
            // Not ours for this address (we restarted, its address changed, or it is forged): it gets a fresh
            // cookie like any unproven request, no signature work.
            if !cookied {
                core.counters.badCookies += 1
                staleCookie = true
            }
        }
        guard let opened = DHTWire.open(signed) else {
            core.counters.malformed += 1
            return []
        }
        // Overflow-checked, and `magnitude` not `abs`: a timestamp 2^63 ms before `nowMs` has a skew of Int64.min.
        let skew = opened.timestampMs.subtractingReportingOverflow(clock.wall(nowMs))
        guard !skew.overflow, skew.partialValue.magnitude <= core.config.maxClockSkewMs.magnitude else {
            if opened.packet.message.isResponse {
                core.counters.staleTimestamp += 1
                return []
            }
            return refuseClock(opened, skewMs: skew.overflow ? (clock.wall(nowMs) < 0 ? .max : .min) : skew.partialValue,
                               from: source, nowMs: nowMs)
        }
        if opened.packet.message.isResponse {
            guard core.awaits(opened.packet.txid, from: source) else {
                core.counters.unexpectedResponse += 1
                return []
            }
        } else {
            // Cookied requests have rate limits of their own: a flood spoofing an address cannot spend the budget
            // the real sender needs once it has a cookie.
            let admitted = cookied ? cookiedLimits.admit(source, nowMs: nowMs) : limits.admit(source, nowMs: nowMs)
            guard admitted else {
                core.counters.rateLimited += 1
                return []
            }
            let key = ReplayCache.Key(txid: opened.packet.txid, tag: opened.replayTag)
            guard count(replays.verdict(key, timestampMs: opened.timestampMs, nowMs: clock.wall(nowMs))) else { return [] }
            if !cookied {
                let write: Bool
                switch opened.packet.message {
                case .store, .withdraw: write = true
                default: write = false
                }
                // Writes always (a proven address can be spoofed too), and anything once the budget for its kind of
                // address is spent, wait for a cookie: 27 bytes back, no signature work, no state.
                let proven = isProven(source, nowMs: nowMs)
                let budget = proven ? provenChecks.take(Self.provenRate(config), nowMs: nowMs)
                                    : unprovenChecks.take(Self.unprovenRate(config), nowMs: nowMs)
                if write || staleCookie || !budget {
                    core.counters.cookiesSent += 1
                    let reply = DHTWire.CookieReply(txid: opened.packet.txid, cookie: jar.cookie(for: source, nowMs: nowMs)).serialized()
                    core.counters.bytesOut += reply.count
                    return [.send(reply, to: source)]
                }
            }
            guard count(replays.insert(key, timestampMs: opened.timestampMs, nowMs: clock.wall(nowMs))) else { return [] }
        }
        guard let sender = opened.sender(), sender != localID else {
            core.counters.badSignature += 1
            return []
        }
        if opened.packet.message.isResponse {
            sentRequests[opened.packet.txid] = nil
            if proven[source] != nil || proven.count < config.maxTrackedSources { proven[source] = nowMs }
        }
        return seal(core.handle(opened.packet, from: Contact(id: sender, endpoint: source), nowMs: nowMs), nowMs: nowMs)
    }

    /// Whether a request may go on after the replay cache's verdict; the refusals are counted.
    private mutating func count(_ verdict: ReplayCache.Verdict) -> Bool {
        switch verdict {
        case .fresh: return true
        case .replayed: core.counters.replayed += 1
        case .futureBudgetSpent: core.counters.futureStampedRefused += 1
        }
        return false
    }

    private func isProven(_ endpoint: DHTEndpoint, nowMs: Int64) -> Bool {
        proven[endpoint].map { nowMs - $0 < config.provenMemoryMs } ?? false
    }

    /// A cookie for a request of ours in flight to `source`: kept for the next requests there, and the request
    /// sent again with it. Anything else is an unexpected response.
    private mutating func receive(_ reply: DHTWire.CookieReply, from source: DHTEndpoint, nowMs: Int64) -> [DHTAction] {
        guard core.awaits(reply.txid, from: source), let sent = sentRequests[reply.txid], sent.to == source else {
            core.counters.unexpectedResponse += 1
            return []
        }
        core.counters.cookiesReceived += 1
        cookies[source] = (reply.cookie, nowMs)
        // Once per request: a cookie that does not work twice is not worth a third datagram.
        guard !sent.cookieTried else { return [] }
        sentRequests[reply.txid]?.cookieTried = true
        let datagram = DHTWire.Cookied.wrap(sent.datagram, cookie: reply.cookie)
        core.counters.bytesOut += datagram.count
        return [.send(datagram, to: source)]
    }

    public mutating func tick(nowMs: Int64) -> [DHTAction] {
        replays.expire(before: clock.wall(nowMs) - core.config.maxClockSkewMs)
        limits.prune(nowMs: nowMs)
        cookiedLimits.prune(nowMs: nowMs)
        sentRequests = sentRequests.filter { nowMs - $0.value.atMs < 2 * config.requestTimeoutMs }
        cookies = cookies.filter { nowMs - $0.value.atMs < config.cookieReuseMs }
        proven = proven.filter { nowMs - $0.value < config.provenMemoryMs }
        skewLogged = skewLogged.filter { nowMs - $0.value < Self.skewLogIntervalMs }
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

    // MARK: clock skew

    /// A request stamped too far from this node's clock: within its source's rate limits, answered with this
    /// node's clock (19 bytes, no state, no signature work); logged at most once a minute per endpoint (the
    /// signer is recovered for that line only).
    private mutating func refuseClock(_ opened: DHTWire.Opened, skewMs: Int64, from source: DHTEndpoint,
                                      nowMs: Int64) -> [DHTAction] {
        guard limits.admit(source, nowMs: nowMs) else {
            core.counters.rateLimited += 1
            return []
        }
        core.counters.staleTimestamp += 1
        core.counters.clockNoticesSent += 1
        let notice = DHTWire.ClockNotice(txid: opened.packet.txid, clockMs: clock.wall(nowMs)).serialized()
        core.counters.bytesOut += notice.count
        var actions: [DHTAction] = [.send(notice, to: source)]
        if shouldLogSkew(SkewLogKey(endpoint: source, ours: false), nowMs: nowMs) {
            actions.append(.clockSkew(ClockSkewReport(direction: .refusedTheirs, endpoint: source, node: opened.sender(),
                                                      skewMs: skewMs, toleranceMs: config.maxClockSkewMs)))
        }
        return actions
    }

    /// A clock notice: counted and remembered by the core when it answers a request of ours in flight to
    /// `source` (anything else is an unexpected response); logged at most once a minute per endpoint.
    private mutating func receive(_ notice: DHTWire.ClockNotice, from source: DHTEndpoint, nowMs: Int64) -> [DHTAction] {
        guard let refusal = core.clockRefused(notice.txid, from: source, theirClockMs: notice.clockMs, nowMs: nowMs),
              shouldLogSkew(SkewLogKey(endpoint: source, ours: true), nowMs: nowMs)
        else { return [] }
        return [.clockSkew(ClockSkewReport(direction: .refusedOurs, endpoint: source, node: refusal.node,
                                           skewMs: refusal.skewMs, toleranceMs: config.maxClockSkewMs))]
    }

    private mutating func shouldLogSkew(_ key: SkewLogKey, nowMs: Int64) -> Bool {
        if let last = skewLogged[key], nowMs - last < Self.skewLogIntervalMs { return false }
        guard skewLogged[key] != nil || skewLogged.count < Self.skewLogLimit else { return false }
        skewLogged[key] = nowMs
        return true
    }

    // MARK: envelope

    private mutating func seal(_ actions: [DHTProtocolAction], nowMs: Int64) -> [DHTAction] {
        actions.map { action in
            switch action {
            case .send(let packet, let to):
                var datagram = DHTWire.seal(packet, timestampMs: clock.wall(nowMs), identity: identity)
                if !packet.message.isResponse {
                    sentRequests[packet.txid] = (to, datagram, nowMs, false)
                    if let cookie = cookies[to], nowMs - cookie.atMs < config.cookieReuseMs {
                        datagram = DHTWire.Cookied.wrap(datagram, cookie: cookie.cookie)
                    }
                }
                core.counters.bytesOut += datagram.count
                return .send(datagram, to: to)
            case .recordStored(let record): return .recordStored(record)
            case .recordDropped(let key): return .recordDropped(key)
            case .lookupFinished(let id, let outcome): return .lookupFinished(id, outcome)
            }
        }
    }
}
