import MeshIdentity
import MeshWire

/// "Who hosts this wallet?" asked over links, ring by ring (docs/routing.md, "Finding a wallet through links"):
/// for a caller that can reach nothing but its neighbours, where the DHT's direct lookups cannot reach the nodes
/// they learn about. A query spreads to every neighbour up to `ttl` links; the first node whose gossip knows the
/// wallet answers with the wallet-signed host announcement, which travels back the way the query came. Pure.
public struct WalletFinder: Sendable {
    public struct Config: Sendable {
        /// A query id is remembered this long (duplicates dropped, answers routed back).
        public var memoryMs: Int64 = 10_000
        public var maxRemembered = 4_096
        /// Queries a neighbour may send a second, and the burst.
        public var queriesPerSecond = 20.0
        public var queryBurst = 40.0
        /// A query travels at most this many links whatever TTL it came with (the node's hop limit).
        public var maxTTL: UInt8 = 6
        var rate: TokenBucket.Rate { TokenBucket.Rate(perSecond: queriesPerSecond, burst: queryBurst) }
        public init() {}
    }

    public enum Message: Equatable, Sendable {
        case find(query: UInt64, wallet: WalletAddress, ttl: UInt8)
        case found(query: UInt64, HostAnnouncement)

        static let findTag: UInt8 = 0x04
        static let foundTag: UInt8 = 0x05

        public static func claims(_ payload: [UInt8]) -> Bool { payload.first == findTag || payload.first == foundTag }

        public func serialize() -> [UInt8] {
            var w = ByteWriter(capacity: 128)
            switch self {
            case .find(let query, let wallet, let ttl):
                w.write(Self.findTag)
                w.write(query)
                w.write(bytes: wallet.bytes)
                w.write(ttl)
            case .found(let query, let announcement):
                w.write(Self.foundTag)
                w.write(query)
                GossipMessage.write(announcement, to: &w)
            }
            return w.bytes
        }

        public init?(parsing bytes: [UInt8]) {
            var r = ByteReader(bytes)
            guard let tag = r.readUInt8(), let query = r.readUInt64() else { return nil }
            switch tag {
            case Self.findTag:
                guard let wallet = r.readBytes(20).flatMap(WalletAddress.init(bytes:)), let ttl = r.readUInt8(), r.isAtEnd
                else { return nil }
                self = .find(query: query, wallet: wallet, ttl: ttl)
            case Self.foundTag:
                guard let announcement = GossipMessage.readAnnouncement(&r), r.isAtEnd else { return nil }
                self = .found(query: query, announcement)
            default:
                return nil
            }
        }
    }

    public enum Action: Sendable, Equatable {
        case send([UInt8], to: WalletAddress)
        /// An authentic answer to this node's own query.
        case found(query: UInt64, HostAnnouncement)
    }

    public struct Counters: Sendable, Codable, Equatable {
        public var malformed = 0
        public var duplicates = 0
        public var rateLimited = 0
        public var answered = 0
        public var forged = 0
        public init() {}
    }

    struct Asked {
        /// Who asked us (nil: our own query).
        var from: WalletAddress?
        var wallet: WalletAddress
        var at: Int64
    }

    public let config: Config
    private var asked: [UInt64: Asked] = [:]
    private var budgets: [WalletAddress: TokenBucket] = [:]
    public private(set) var counters = Counters()
    /// The wall clock, for host announcements' expiries (the shell keeps it current; `now` is monotonic).
    public var clock = WallClock()

    public init(config: Config = Config()) { self.config = config }

    /// Starts this node's own query to every neighbour.
    public mutating func find(_ wallet: WalletAddress, query: UInt64, ttl: UInt8, neighbours: [WalletAddress], now: Int64) -> [Action] {
        remember(query, Asked(from: nil, wallet: wallet, at: now), now: now)
        let bytes = Message.find(query: query, wallet: wallet, ttl: ttl).serialize()
        return neighbours.map { .send(bytes, to: $0) }
    }

    /// A message from a neighbour; `known` is what this node's gossip knows of a wallet (its host announcement).
    public mutating func receive(_ payload: [UInt8], from node: WalletAddress, neighbours: [WalletAddress],
                                 known: (WalletAddress) -> HostAnnouncement?, now: Int64) -> [Action] {
        guard let message = Message(parsing: payload) else {
            counters.malformed += 1
            return []
        }
        switch message {
        case .find(let query, let wallet, let ttl):
            guard asked[query] == nil else {
                counters.duplicates += 1
                return []
            }
            var budget = budgets[node] ?? TokenBucket(config.rate, nowMs: now)
            let allowed = budget.take(config.rate, nowMs: now)
            budgets[node] = budget
            guard allowed else {
                counters.rateLimited += 1
                return []
            }
            if let announcement = known(wallet) {
                counters.answered += 1
                return [.send(Message.found(query: query, announcement).serialize(), to: node)]
            }
            let ttl = min(ttl, config.maxTTL)
            // Passed on only once remembered: a query this node could not remember would come back and go round.
            guard ttl > 1, remember(query, Asked(from: node, wallet: wallet, at: now), now: now) else { return [] }
            let bytes = Message.find(query: query, wallet: wallet, ttl: ttl - 1).serialize()
            return neighbours.filter { $0 != node }.map { .send(bytes, to: $0) }
        case .found(let query, let announcement):
            // Only answers to queries that went through here, about the wallet asked for, and signed by it.
            guard let entry = asked[query], entry.wallet == announcement.wallet else {
                counters.duplicates += 1
                return []
            }
            guard announcement.expiresAtMs > clock.wall(now), announcement.isAuthentic else {
                counters.forged += 1
                return []
            }
            asked[query] = nil
            guard let back = entry.from else { return [.found(query: query, announcement)] }
            return [.send(payload, to: back)]
        }
    }

    /// Remembers a query; when full, forgets those older than `memoryMs`, and then the oldest others' queries (this
    /// node's own are kept: their answers must find their way home). False when there is no room even so.
    @discardableResult
    private mutating func remember(_ query: UInt64, _ entry: Asked, now: Int64) -> Bool {
        if asked.count >= config.maxRemembered {
            asked = asked.filter { now - $0.value.at < config.memoryMs }
            budgets = budgets.filter { var bucket = $0.value; return bucket.refill(config.rate, nowMs: now) < config.queryBurst }
        }
        if asked.count >= config.maxRemembered,
           let oldest = asked.filter({ $0.value.from != nil }).min(by: { $0.value.at < $1.value.at }) {
            asked[oldest.key] = nil
        }
        guard asked.count < config.maxRemembered else { return false }
        asked[query] = entry
        return true
    }
}
