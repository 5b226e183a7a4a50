import HeapModule
import MeshDHT
import MeshIdentity

/// Many DHT cores in one process on a virtual clock (docs/dht.md, "Simulator"): a latency matrix from random
/// coordinates, loss, partitions and churn, all drawn from one seeded generator, so a run repeats exactly.
///
/// The simulator drives the message-level core (`DHTProtocol`) and delivers `DHTPacket`s as they are, with the
/// sender's id as the envelope layer would have proven it: signing and recovering every message of a
/// 10,000-node network would cost minutes of secp256k1 work and test nothing the envelope tests don't. Node ids
/// are drawn from the seed. Presence records are real: signed by wallet keys made from the seed and validated
/// by the nodes that store and find them.
public struct DHTSimulator {
    public struct Config: Sendable {
        public var seed: UInt64 = 1
        public var dht = DHTConfig()
        /// One-way latency = `minLatencyMs` + distance in the unit square / √2 × `spanLatencyMs`, plus up to
        /// `jitter` of that, drawn per datagram.
        public var minLatencyMs = 5.0
        public var spanLatencyMs = 145.0
        public var jitter = 0.1
        /// Chance that a datagram is lost.
        public var lossRate = 0.0
        /// Virtual start time (Unix ms, so record expiry behaves as on a real clock).
        public var startMs: Int64 = 1_700_000_000_000
        public init() {}
    }

    public struct Node: Sendable {
        /// Nil once the node has left.
        public fileprivate(set) var core: DHTProtocol?
        public let contact: Contact
        let x: Double, y: Double
        var group = 0
        var scheduledTickMs: Int64?
        /// False for a node added with `addSilentNode()` until `start(_:bootstrapFrom:)`: datagrams to it are lost.
        public fileprivate(set) var isListening = true
        public var isAlive: Bool { core != nil }
    }

    /// A lookup started with `startLookup`, by its origin node.
    public struct LookupKey: Hashable, Sendable {
        public let node: Int
        public let id: LookupID
    }

    public let config: Config
    public private(set) var nowMs: Int64
    public private(set) var nodes: [Node] = []
    /// Outcomes of lookups started with `startLookup`.
    public private(set) var finished: [LookupKey: LookupOutcome] = [:]
    /// When each node stored a record, for the keys in `trackedKeys`.
    public private(set) var storeTimes: [NodeID: [(node: Int, timeMs: Int64)]] = [:]
    public var trackedKeys: Set<NodeID> = []
    public private(set) var datagramsSent = 0
    public private(set) var datagramsLost = 0
    public var lossRate: Double

    private var rng: SplitMix64
    private var queue = EventQueue()
    private var alive: [Int] = []
    private var alivePosition: [Int: Int] = [:]
    private var partitioned = false

    public init(config: Config) {
        self.config = config
        self.nowMs = config.startMs
        self.lossRate = config.lossRate
        self.rng = SplitMix64(seed: config.seed)
    }

    // MARK: building the network

    /// Adds `count` nodes whose routing tables are filled from global knowledge (up to k random contacts in
    /// every bucket, unverified, as if restored from storage): a large network in moments, without running
    /// thousands of joins.
    public mutating func addPopulatedNodes(_ count: Int) {
        let first = nodes.count
        for _ in 0..<count { _ = makeNode() }
        let everyone = alive.map { (nodes[$0].contact.id, $0) }.sorted { $0.0 < $1.0 }
        let ids = everyone.map(\.0)
        for index in first..<nodes.count {
            let id = nodes[index].contact.id
            var contacts: [Contact] = []
            for bucket in stride(from: 255, through: 0, by: -1) {
                let range = id.bucketRange(bucket)
                let low = Self.lowerBound(ids, range.lowerBound), high = Self.upperBound(ids, range.upperBound)
                if low < high {
                    contacts += sample(config.dht.k, from: low..<high).map { nodes[everyone[$0].1].contact }
                }
            }
            nodes[index].core!.restore(contacts: contacts, records: [], nowMs: nowMs)
            schedule(index)
        }
    }

    /// Adds one node that joins through the DHT protocol, bootstrapping from a random live node (or nothing,
    /// for the first). Returns its index.
    @discardableResult
    public mutating func join() -> Int {
        let helper = alive.isEmpty ? nil : alive[Int.random(in: 0..<alive.count, using: &rng)]
        let index = makeNode()
        let endpoints = helper.map { [nodes[$0].contact.endpoint] } ?? []
        let actions = nodes[index].core!.bootstrap(endpoints, nowMs: nowMs)
        perform(actions, at: index)
        return index
    }

    /// Adds a node that is not started yet: it has an id and an endpoint, datagrams to it are lost (as to a
    /// process that has not bound its port), and it is not among `aliveNodes` until `start`.
    public mutating func addSilentNode() -> Int {
        let index = makeNode()
        nodes[index].isListening = false
        alive.removeLast()
        alivePosition[index] = nil
        return index
    }

    /// Starts a node added with `addSilentNode()`: it listens and bootstraps from the given nodes' endpoints
    /// (which may not be listening yet).
    public mutating func start(_ index: Int, bootstrapFrom helpers: [Int]) {
        precondition(!nodes[index].isListening, "node \(index) already started")
        nodes[index].isListening = true
        alivePosition[index] = alive.count
        alive.append(index)
        let actions = nodes[index].core!.bootstrap(helpers.map { nodes[$0].contact.endpoint }, nowMs: nowMs)
        perform(actions, at: index)
    }

    /// The node leaves without a word (crash or disconnect); datagrams to it are lost.
    public mutating func kill(_ index: Int) {
        guard nodes[index].isAlive, let position = alivePosition.removeValue(forKey: index) else { return }
        nodes[index].core = nil
        let last = alive.removeLast()
        if last != index {
            alive[position] = last
            alivePosition[last] = position
        }
    }

    /// Churn step: a random live node outside `protected` leaves and a new node joins.
    public mutating func replaceRandomNode(protecting protected: Set<Int> = []) {
        for _ in 0..<100 {
            let victim = alive[Int.random(in: 0..<alive.count, using: &rng)]
            if protected.contains(victim) { continue }
            kill(victim)
            break
        }
        join()
    }

    /// Splits the live nodes into `groups` random groups; datagrams between groups are lost until `heal()`.
    public mutating func partition(into groups: Int) {
        for index in alive { nodes[index].group = Int.random(in: 0..<groups, using: &rng) }
        partitioned = true
    }

    /// Puts each live node in the group `groupOf` gives it; datagrams between groups are lost until `heal()`.
    public mutating func partition(by groupOf: (Int) -> Int) {
        for index in alive { nodes[index].group = groupOf(index) }
        partitioned = true
    }

    public mutating func heal() { partitioned = false }

    // MARK: driving nodes

    public var aliveNodes: [Int] { alive }

    public mutating func randomAliveNode() -> Int { alive[Int.random(in: 0..<alive.count, using: &rng)] }

    public mutating func random<T>(_ choices: [T]) -> T { choices[Int.random(in: 0..<choices.count, using: &rng)] }

    /// Starts a value lookup at `node`; its outcome lands in `finished`.
    @discardableResult
    public mutating func startLookup(from node: Int, key: NodeID) -> LookupKey {
        let (id, actions) = nodes[node].core!.findValue(key, nowMs: nowMs)
        perform(actions, at: node)
        return LookupKey(node: node, id: id)
    }

    /// `node` publishes a presence record for `wallet` (its own endpoint as the home endpoint).
    public mutating func publish(from node: Int, wallet: PrivateKey) {
        let endpoint = nodes[node].contact.endpoint
        let actions = nodes[node].core!.publish(wallet: wallet, endpoints: [endpoint], relays: [], nowMs: nowMs)
        perform(actions, at: node)
    }

    /// A wallet key drawn from the simulation's generator (so records repeat exactly per seed).
    public mutating func makeWallet() -> PrivateKey { rng.privateKey() }

    /// Runs every event up to and including `timeMs`; the clock ends at `timeMs`.
    public mutating func run(until timeMs: Int64) {
        while let event = queue.popFirst(notAfter: timeMs) {
            nowMs = event.timeMs
            switch event.kind {
            case .deliver(let to, let from, let packet):
                guard nodes[to].isAlive, nodes[to].isListening else { continue }
                let actions = nodes[to].core!.handle(packet, from: nodes[from].contact, nowMs: nowMs)
                perform(actions, at: to)
            case .tick(let index):
                guard nodes[index].isAlive, nodes[index].scheduledTickMs == event.timeMs else { continue }
                nodes[index].scheduledTickMs = nil
                let actions = nodes[index].core!.tick(nowMs: nowMs)
                perform(actions, at: index)
            }
        }
        nowMs = max(nowMs, timeMs)
    }

    public mutating func run(forMs duration: Int64) { run(until: nowMs + duration) }

    /// The one-way latency between two nodes before jitter.
    public func baseLatencyMs(_ a: Int, _ b: Int) -> Double {
        let dx = nodes[a].x - nodes[b].x, dy = nodes[a].y - nodes[b].y
        return config.minLatencyMs + (dx * dx + dy * dy).squareRoot() / 2.squareRoot() * config.spanLatencyMs
    }

    /// Which node listens at `endpoint` (endpoints encode the index: 16+i>>16 . i>>8 . i . 1).
    public static func index(of endpoint: DHTEndpoint) -> Int? {
        guard let ip = endpoint.ipv4, ip & 0xff == 1, ip >> 24 >= 16 else { return nil }
        return Int(ip >> 8) - (16 << 16)
    }

    // MARK: internals

    private mutating func makeNode() -> Int {
        let index = nodes.count
        precondition(index < 240 << 16, "too many simulated nodes")
        let endpoint = DHTEndpoint(ip: [UInt8(16 + index >> 16), UInt8(index >> 8 & 0xff), UInt8(index & 0xff), 1],
                                   port: 4460)!
        let id = NodeID.random(using: &rng)
        let core = DHTProtocol(localID: id, config: config.dht, seed: rng.next())
        let x = Double.random(in: 0..<1, using: &rng), y = Double.random(in: 0..<1, using: &rng)
        nodes.append(Node(core: core, contact: Contact(id: id, endpoint: endpoint), x: x, y: y))
        alivePosition[index] = alive.count
        alive.append(index)
        return index
    }

    private mutating func perform(_ actions: [DHTProtocolAction], at index: Int) {
        for action in actions {
            switch action {
            case .send(let packet, let endpoint):
                datagramsSent += 1
                guard let to = Self.index(of: endpoint), to < nodes.count else { continue }
                if lossRate > 0, Double.random(in: 0..<1, using: &rng) < lossRate { datagramsLost += 1; continue }
                if partitioned, nodes[to].group != nodes[index].group { datagramsLost += 1; continue }
                let base = baseLatencyMs(index, to)
                let latency = base * (1 + config.jitter * Double.random(in: 0..<1, using: &rng))
                queue.push(timeMs: nowMs + Int64(latency.rounded()), .deliver(to: to, from: index, packet: packet))
            case .lookupFinished(let id, let outcome):
                finished[LookupKey(node: index, id: id)] = outcome
            case .recordStored(let record):
                if trackedKeys.contains(record.key) { storeTimes[record.key, default: []].append((index, nowMs)) }
            case .recordDropped:
                break
            }
        }
        schedule(index)
    }

    private mutating func schedule(_ index: Int) {
        guard let due = nodes[index].core?.nextTimeoutMs else { return }
        if let scheduled = nodes[index].scheduledTickMs, scheduled <= due { return }
        let time = max(due, nowMs)
        nodes[index].scheduledTickMs = time
        queue.push(timeMs: time, .tick(index))
    }

    /// Up to `count` distinct random positions of `range`.
    private mutating func sample(_ count: Int, from range: Range<Int>) -> [Int] {
        if range.count <= count { return Array(range) }
        var chosen: [Int] = []
        var seen: Set<Int> = []
        while chosen.count < count {
            let pick = Int.random(in: range, using: &rng)
            if seen.insert(pick).inserted { chosen.append(pick) }
        }
        return chosen
    }

    private static func lowerBound(_ ids: [NodeID], _ value: NodeID) -> Int {
        var low = 0, high = ids.count
        while low < high {
            let mid = (low + high) / 2
            if ids[mid] < value { low = mid + 1 } else { high = mid }
        }
        return low
    }

    private static func upperBound(_ ids: [NodeID], _ value: NodeID) -> Int {
        var low = 0, high = ids.count
        while low < high {
            let mid = (low + high) / 2
            if ids[mid] <= value { low = mid + 1 } else { high = mid }
        }
        return low
    }
}

/// Pending simulator events, earliest first; ties in insertion order (a heap keyed by time and sequence).
struct EventQueue {
    /// Boxed, so sifting the heap moves a pointer rather than a packet.
    indirect enum Kind {
        case deliver(to: Int, from: Int, packet: DHTPacket)
        case tick(Int)
    }

    struct Event: Comparable {
        let timeMs: Int64
        let sequence: UInt64
        let kind: Kind

        static func < (a: Event, b: Event) -> Bool { (a.timeMs, a.sequence) < (b.timeMs, b.sequence) }
        static func == (a: Event, b: Event) -> Bool { a.sequence == b.sequence }
    }

    private var heap = Heap<Event>()
    private var nextSequence: UInt64 = 0

    mutating func push(timeMs: Int64, _ kind: Kind) {
        heap.insert(Event(timeMs: timeMs, sequence: nextSequence, kind: kind))
        nextSequence += 1
    }

    /// Removes and returns the earliest event if it is due by `timeMs`.
    mutating func popFirst(notAfter timeMs: Int64) -> Event? {
        guard let first = heap.min, first.timeMs <= timeMs else { return nil }
        return heap.removeMin()
    }
}
