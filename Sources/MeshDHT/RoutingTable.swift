/// One contact in a k-bucket.
struct TableEntry: Sendable {
    var contact: Contact
    var lastSeenMs: Int64
    var rttMs: Double?
    /// Answered this node itself in this run (restored contacts are not, until they do).
    var verified: Bool
    /// Requests in a row that went unanswered.
    var failures = 0
}

struct Bucket: Sendable {
    /// Least recently seen first, at most k.
    var entries: [TableEntry] = []
    /// Contacts waiting for a place, newest last.
    var replacements: [TableEntry] = []
    /// The entry being pinged because a newcomer waits for its place.
    var checking: NodeID?
    /// When a lookup last targeted an id in this bucket's range (refresh bookkeeping).
    var lastLookupMs: Int64 = 0
}

/// What observing a contact did.
enum Observation: Equatable {
    case updated, inserted
    /// The bucket is full; the contact waits in the replacement cache. When `check` is set, the caller pings
    /// that entry (the least recently seen): an answer keeps it, a timeout replaces it.
    case cached(check: Contact?)
    case prefixLimited
    case ignored
}

/// The k-buckets of one node (docs/dht.md, "Routing table"): 256 buckets by XOR distance, each ordered least
/// recently seen first with a replacement cache; per-prefix limits; liveness-checked eviction.
struct RoutingTable: Sendable {
    let localID: NodeID
    let config: DHTConfig
    private(set) var buckets = [Bucket](repeating: Bucket(), count: 256)
    private var prefixCounts: [UInt64: Int] = [:]
    private(set) var count = 0

    init(localID: NodeID, config: DHTConfig) {
        self.localID = localID
        self.config = config
    }

    /// Records that `contact` was heard from. `confirmed`: it answered a request this node sent to that
    /// endpoint (so a changed endpoint is believed and the entry is verified); otherwise it sent a signed
    /// request from there, which adds a new contact but does not move a known one.
    mutating func observe(_ contact: Contact, nowMs: Int64, rttMs: Double? = nil, confirmed: Bool) -> Observation {
        guard let index = localID.bucketIndex(of: contact.id) else { return .ignored }
        var bucket = takeBucket(index)
        defer { buckets[index] = bucket }
        if let position = bucket.entries.firstIndex(where: { $0.contact.id == contact.id }) {
            var entry = bucket.entries.remove(at: position)
            if confirmed, entry.contact.endpoint != contact.endpoint {
                adjustPrefix(entry.contact.endpoint, by: -1)
                adjustPrefix(contact.endpoint, by: 1)
                entry.contact.endpoint = contact.endpoint
            }
            entry.lastSeenMs = nowMs
            entry.failures = 0
            entry.verified = entry.verified || confirmed
            if let rttMs { entry.rttMs = entry.rttMs.map { 0.875 * $0 + 0.125 * rttMs } ?? rttMs }
            bucket.entries.append(entry)
            if bucket.checking == contact.id { bucket.checking = nil }
            return .updated
        }
        let entry = TableEntry(contact: contact, lastSeenMs: nowMs, rttMs: rttMs, verified: true)
        guard admits(contact.endpoint, into: bucket) else { return .prefixLimited }
        if bucket.entries.count < config.k {
            bucket.entries.append(entry)
            bucket.replacements.removeAll { $0.contact.id == contact.id }
            adjustPrefix(contact.endpoint, by: 1)
            count += 1
            return .inserted
        }
        bucket.replacements.removeAll { $0.contact.id == contact.id }
        bucket.replacements.append(entry)
        if bucket.replacements.count > config.replacementCacheSize { bucket.replacements.removeFirst() }
        guard bucket.checking == nil, let head = bucket.entries.first else { return .cached(check: nil) }
        bucket.checking = head.contact.id
        return .cached(check: head.contact)
    }

    /// Adds contacts restored from storage (unverified), as long as buckets and prefix limits have room.
    mutating func restore(_ contact: Contact, nowMs: Int64) {
        guard let index = localID.bucketIndex(of: contact.id),
              buckets[index].entries.count < config.k,
              !buckets[index].entries.contains(where: { $0.contact.id == contact.id }),
              admits(contact.endpoint, into: buckets[index])
        else { return }
        buckets[index].entries.append(TableEntry(contact: contact, lastSeenMs: nowMs, verified: false))
        adjustPrefix(contact.endpoint, by: 1)
        count += 1
    }

    /// A request to `id` went unanswered. The entry goes (and the newest fitting replacement takes its place)
    /// after `maxFailures` in a row, after one when a replacement is waiting, or at once when it was the
    /// liveness check for a newcomer. Returns whether it was removed.
    @discardableResult
    mutating func failed(_ id: NodeID) -> Bool {
        guard let index = localID.bucketIndex(of: id),
              let position = buckets[index].entries.firstIndex(where: { $0.contact.id == id })
        else { return false }
        var bucket = takeBucket(index)
        defer { buckets[index] = bucket }
        bucket.entries[position].failures += 1
        let wasChecked = bucket.checking == id
        if wasChecked { bucket.checking = nil }
        let failures = bucket.entries[position].failures
        guard wasChecked || failures >= config.maxFailures || (!bucket.replacements.isEmpty) else { return false }
        let removed = bucket.entries.remove(at: position)
        adjustPrefix(removed.contact.endpoint, by: -1)
        count -= 1
        while let candidate = bucket.replacements.popLast() {
            if admits(candidate.contact.endpoint, into: bucket) {
                bucket.entries.append(candidate)
                adjustPrefix(candidate.contact.endpoint, by: 1)
                count += 1
                break
            }
        }
        return true
    }

    /// `id` is in the table at `endpoint` and has answered a request this node sent there (its address is
    /// proven).
    func isVerified(_ id: NodeID, at endpoint: DHTEndpoint) -> Bool {
        guard let index = localID.bucketIndex(of: id) else { return false }
        return buckets[index].entries.contains { $0.contact.id == id && $0.verified && $0.contact.endpoint == endpoint }
    }

    func contains(_ id: NodeID) -> Bool {
        guard let index = localID.bucketIndex(of: id) else { return false }
        return buckets[index].entries.contains { $0.contact.id == id }
    }

    /// The `count` contacts closest to `target`, closest first. Buckets are visited in distance order: for a
    /// target in bucket b, entries of bucket b are closer than those of buckets 0..<b (whose distance to the
    /// target has its top bit at b), which are closer than bucket b+1, then b+2, …; only within those groups is
    /// sorting needed. `healthyOnly` leaves out contacts with unanswered requests (what this node tells others).
    func closest(to target: NodeID, count wanted: Int, healthyOnly: Bool = false) -> [Contact] {
        var result: [Contact] = []
        result.reserveCapacity(wanted)
        var group: [Ranked] = []
        func take() {
            group.sort { $0.distance < $1.distance }
            for item in group.prefix(wanted - result.count) { result.append(item.contact) }
            group.removeAll(keepingCapacity: true)
        }
        func collect(_ bucket: Int) {
            for entry in buckets[bucket].entries where !healthyOnly || entry.failures == 0 {
                group.append(Ranked(distance: entry.contact.id.distance(to: target), contact: entry.contact))
            }
        }
        let targetBucket = localID.bucketIndex(of: target) ?? -1
        if targetBucket >= 0 {
            collect(targetBucket)
            take()
            if result.count < wanted {
                for index in 0..<targetBucket { collect(index) }
                take()
            }
        }
        var index = targetBucket + 1
        while result.count < wanted, index < 256 {
            collect(index)
            take()
            index += 1
        }
        return result
    }

    private struct Ranked {
        let distance: NodeID
        let contact: Contact
    }

    var allEntries: [(bucket: Int, entry: TableEntry)] {
        buckets.indices.flatMap { i in buckets[i].entries.map { (i, $0) } }
    }

    var lowestNonEmptyBucket: Int? { buckets.indices.first { !buckets[$0].entries.isEmpty } }

    mutating func markLookup(_ target: NodeID, nowMs: Int64) {
        if let index = localID.bucketIndex(of: target) { buckets[index].lastLookupMs = nowMs }
    }

    mutating func setLastLookup(bucket index: Int, nowMs: Int64) { buckets[index].lastLookupMs = nowMs }

    /// Moves a bucket out (leaving an empty one) so it is edited without copying its arrays.
    private mutating func takeBucket(_ index: Int) -> Bucket {
        var bucket = Bucket()
        swap(&bucket, &buckets[index])
        return bucket
    }

    // MARK: per-prefix limits

    private func admits(_ endpoint: DHTEndpoint, into bucket: Bucket) -> Bool {
        guard let prefix = endpoint.limitedPrefix else { return true }
        if prefixCounts[prefix, default: 0] >= config.perPrefixLimit { return false }
        return bucket.entries.count { $0.contact.endpoint.limitedPrefix == prefix } < config.perPrefixBucketLimit
    }

    private mutating func adjustPrefix(_ endpoint: DHTEndpoint, by delta: Int) {
        guard let prefix = endpoint.limitedPrefix else { return }
        let value = prefixCounts[prefix, default: 0] + delta
        prefixCounts[prefix] = value > 0 ? value : nil
    }
}
