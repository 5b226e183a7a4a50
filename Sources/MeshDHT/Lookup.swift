/// Names one lookup of one node.
public struct LookupID: Hashable, Sendable, Codable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public var description: String { "lookup-\(rawValue)" }
}

/// How a lookup ended.
public struct LookupOutcome: Sendable, Equatable {
    public var target: NodeID
    /// The record found (value lookups), nil when none was.
    public var record: PresenceRecord?
    /// The closest nodes that answered, closest first (at most k).
    public var closest: [Contact]
    /// Hops of the request chain that produced the result: a contact from the local table is hop 1, a contact
    /// first learned from a hop-h answer is hop h+1. For a found record, the hop of the node that returned it;
    /// otherwise the deepest hop among the closest nodes that answered. 0 when answered locally.
    public var rounds: Int
    /// Requests the lookup sent (each draws at most one response).
    public var messages: Int
    /// Nodes the lookup sent a request to: one request each, so the same as `messages`.
    public var queried: Int { messages }
    public var elapsedMs: Int64
    /// Endpoints that refused requests of this node for its clock in the last ten minutes (docs/dht.md,
    /// "Clock skew"), and the skew the latest of them measured (this node's clock minus theirs).
    public var clockRefusals = 0
    public var clockSkewMs: Int64?

    /// "3 DHT nodes refused our requests because our clock is 92 s ahead of theirs", nil when none did.
    public var clockSkewNote: String? {
        guard clockRefusals > 0, let skew = clockSkewMs else { return nil }
        let nodes = clockRefusals == 1 ? "1 DHT node" : "\(clockRefusals) DHT nodes"
        return "\(nodes) refused our requests because our clock is \(ClockSkewReport.describe(skew)) theirs"
    }
}

/// An iterative Kademlia lookup as a state machine (rust-libp2p's ClosestPeersIter shape): candidates sorted
/// by distance; at most α requests in flight; finished when the k closest non-failed candidates have all
/// answered (none closer is still waiting), when nothing is left to ask, or, for a value, when a valid record
/// arrives. The protocol core sends the requests it asks for and feeds back answers and timeouts.
struct Lookup: Sendable {
    enum Kind: Sendable {
        case findNode, findValue, join, refresh
        /// Find the k closest, then STORE the record on them.
        case publish(PresenceRecord)
    }

    enum State: Sendable, Equatable { case fresh, waiting, answered, failed }

    struct Candidate: Sendable {
        var contact: Contact
        var distance: NodeID
        var hop: Int
        var state: State
    }

    let id: LookupID
    let target: NodeID
    let kind: Kind
    let startedMs: Int64
    let k: Int
    let alpha: Int
    let maxCandidates: Int
    private(set) var candidates: [Candidate] = []
    private var seen: Set<NodeID>
    private(set) var messages = 0
    private(set) var record: PresenceRecord?
    private var recordHop = 0
    private(set) var isFinished = false

    init(id: LookupID, target: NodeID, kind: Kind, localID: NodeID, seeds: [Contact], nowMs: Int64, config: DHTConfig) {
        self.id = id
        self.target = target
        self.kind = kind
        self.startedMs = nowMs
        self.k = config.k
        self.alpha = config.alpha
        self.maxCandidates = max(config.maxLookupCandidates, config.k)
        self.seen = [localID]
        add(seeds, hop: 1)
    }

    var isValueLookup: Bool { if case .findValue = kind { true } else { false } }

    /// Adds contacts learned at `hop`; known ones are ignored, the farthest beyond `maxCandidates` forgotten.
    mutating func add(_ contacts: [Contact], hop: Int) {
        for contact in contacts where !seen.contains(contact.id) {
            seen.insert(contact.id)
            let distance = contact.id.distance(to: target)
            var low = 0, high = candidates.count
            while low < high {
                let mid = (low + high) / 2
                if candidates[mid].distance < distance { low = mid + 1 } else { high = mid }
            }
            if low >= maxCandidates { continue }
            candidates.insert(Candidate(contact: contact, distance: distance, hop: hop, state: .fresh), at: low)
            if candidates.count > maxCandidates, let last = candidates.lastIndex(where: { $0.state != .waiting }) {
                candidates.remove(at: last)
            }
        }
    }

    /// The candidates to query now (marked waiting); sets `isFinished` when the lookup is done.
    mutating func next() -> [Contact] {
        guard !isFinished else { return [] }
        var waiting = candidates.count { $0.state == .waiting }
        var answered = 0
        var counting = true
        var toSend: [Contact] = []
        for i in candidates.indices {
            switch candidates[i].state {
            case .answered:
                guard counting else { continue }
                answered += 1
                if answered >= k {
                    isFinished = true
                    return []
                }
            case .waiting:
                counting = false
            case .failed:
                continue
            case .fresh:
                guard waiting < alpha else { return toSend }
                candidates[i].state = .waiting
                waiting += 1
                messages += 1
                counting = false
                toSend.append(candidates[i].contact)
            }
        }
        if waiting == 0 { isFinished = true }
        return toSend
    }

    /// `id` answered with `contacts` (and, for a value lookup, possibly a valid record).
    mutating func answered(_ id: NodeID, contacts: [Contact], record: PresenceRecord? = nil) {
        guard let i = candidates.firstIndex(where: { $0.contact.id == id }), candidates[i].state == .waiting else { return }
        candidates[i].state = .answered
        if let record, self.record == nil {
            self.record = record
            recordHop = candidates[i].hop
            isFinished = true
            return
        }
        add(contacts, hop: candidates[i].hop + 1)
    }

    /// `id` did not answer in time, or answered with something unusable.
    mutating func failed(_ id: NodeID) {
        guard let i = candidates.firstIndex(where: { $0.contact.id == id }), candidates[i].state == .waiting else { return }
        candidates[i].state = .failed
    }

    func outcome(nowMs: Int64) -> LookupOutcome {
        let closest = candidates.lazy.filter { $0.state == .answered }.prefix(k)
        let rounds = record != nil ? recordHop : closest.map(\.hop).max() ?? 0
        return LookupOutcome(target: target, record: record, closest: closest.map(\.contact),
                             rounds: rounds, messages: messages, elapsedMs: nowMs - startedMs)
    }
}
