import HeapModule
import MeshWire

/// Token buckets for requests per source address and per /24 (IPv4) or /64 (IPv6) prefix, checked before any
/// signature work (docs/dht.md, "Hostile peers"). Every address counts, loopback and private ones included.
/// At most `maxTracked` sources of each kind are remembered; beyond that, new ones share one bucket.
struct SourceLimits: Sendable {
    let address: TokenBucket.Rate
    let prefix: TokenBucket.Rate
    let maxTracked: Int
    private var addresses: [SourceKey: TokenBucket] = [:]
    private var prefixes: [SourceKey: TokenBucket] = [:]
    private var nextPruneMs = Int64.min
    private static let overflow = SourceKey(high: .max, low: .max, isIPv4: false)

    init(address: TokenBucket.Rate, prefix: TokenBucket.Rate, maxTracked: Int) {
        self.address = address
        self.prefix = prefix
        self.maxTracked = maxTracked
    }

    /// Takes a token from the source's address and prefix buckets; false (nothing taken) when either is empty.
    mutating func admit(_ source: DHTEndpoint, nowMs: Int64) -> Bool {
        let addressKey = Self.key(source.hostKey, in: addresses, maxTracked)
        let prefixKey = Self.key(source.prefixKey, in: prefixes, maxTracked)
        var a = addresses[addressKey] ?? TokenBucket(address, nowMs: nowMs)
        var p = prefixes[prefixKey] ?? TokenBucket(prefix, nowMs: nowMs)
        let allowed = a.refill(address, nowMs: nowMs) >= 1 && p.refill(prefix, nowMs: nowMs) >= 1
        if allowed {
            a.spend()
            p.spend()
        }
        addresses[addressKey] = a
        prefixes[prefixKey] = p
        return allowed
    }

    /// Forgets sources whose buckets have filled up again (they behave as new); at most once a second.
    mutating func prune(nowMs: Int64) {
        guard nowMs >= nextPruneMs else { return }
        nextPruneMs = nowMs + 1_000
        addresses = addresses.filter { var b = $0.value; return b.refill(address, nowMs: nowMs) < address.burst }
        prefixes = prefixes.filter { var b = $0.value; return b.refill(prefix, nowMs: nowMs) < prefix.burst }
    }

    private static func key(_ key: SourceKey, in table: [SourceKey: TokenBucket], _ maxTracked: Int) -> SourceKey {
        table[key] != nil || table.count < maxTracked ? key : overflow
    }
}

/// Requests seen within the clock-skew window, so a captured request is answered once (docs/dht.md, "Replay
/// cache"). Keyed by txid and signature, so a replay is caught before any signature work. Bounded: when full,
/// the entry with the oldest timestamp goes and its timestamp becomes the watermark; requests stamped at or
/// before the watermark are refused from then on, so flooding the cache cannot make it forget a request
/// that would still be accepted. Requests stamped more than `futureSlackMs` ahead of the receiver's clock
/// share a budget of `futureCapacity` entries and are refused (never evicting) when it is spent: entries
/// stamped in the future would otherwise outlive the honest ones and push the watermark past "now".
struct ReplayCache: Sendable {
    struct Key: Hashable, Sendable {
        let txid: UInt64
        let tag: UInt64
    }

    enum Verdict: Equatable, Sendable {
        case fresh
        /// Seen before, or stamped at or before the watermark.
        case replayed
        /// Stamped ahead of the receiver's clock while the budget for such requests is spent.
        case futureBudgetSpent
    }

    /// Ordered by timestamp, so the heap gives the oldest first.
    private struct Entry: Comparable, Sendable {
        let timestampMs: Int64
        let key: Key
        let future: Bool
        static func < (a: Entry, b: Entry) -> Bool { a.timestampMs < b.timestampMs }
        static func == (a: Entry, b: Entry) -> Bool { a.timestampMs == b.timestampMs && a.key == b.key }
    }

    static let futureSlackMs: Int64 = 2_000

    let capacity: Int
    let futureCapacity: Int
    private var seen: Set<Key> = []
    private var heap = Heap<Entry>()
    private var futureCount = 0
    private(set) var watermarkMs = Int64.min

    /// A sixteenth of the cache for requests stamped in the future (honest ones come from nodes whose clocks
    /// run ahead, a minority).
    init(capacity: Int) {
        self.capacity = max(capacity, 2)
        futureCapacity = max(self.capacity / 16, 1)
    }

    var count: Int { seen.count }

    /// What `insert` would say, without remembering anything (a request that must first come back with a cookie
    /// is judged now and remembered when it is handled).
    func verdict(_ key: Key, timestampMs: Int64, nowMs: Int64) -> Verdict {
        guard timestampMs > watermarkMs, !seen.contains(key) else { return .replayed }
        if timestampMs > nowMs + Self.futureSlackMs && futureCount >= futureCapacity { return .futureBudgetSpent }
        return .fresh
    }

    /// Remembers a request stamped `timestampMs` that arrived at `nowMs`.
    mutating func insert(_ key: Key, timestampMs: Int64, nowMs: Int64) -> Verdict {
        let verdict = verdict(key, timestampMs: timestampMs, nowMs: nowMs)
        guard verdict == .fresh else { return verdict }
        let future = timestampMs > nowMs + Self.futureSlackMs
        if future { futureCount += 1 }
        seen.insert(key)
        heap.insert(Entry(timestampMs: timestampMs, key: key, future: future))
        // At least capacity − futureCapacity entries were stamped no later than their arrival + slack, so the
        // oldest is never ahead of now + slack: the watermark cannot pass the present.
        if seen.count > capacity, let oldest = heap.popMin() {
            forget(oldest)
            watermarkMs = max(watermarkMs, oldest.timestampMs)
        }
        return .fresh
    }

    /// Forgets requests stamped before `cutoffMs` (the timestamp check refuses them anyway).
    mutating func expire(before cutoffMs: Int64) {
        while let oldest = heap.min, oldest.timestampMs < cutoffMs {
            heap.removeMin()
            forget(oldest)
        }
    }

    private mutating func forget(_ entry: Entry) {
        seen.remove(entry.key)
        if entry.future { futureCount -= 1 }
    }
}
