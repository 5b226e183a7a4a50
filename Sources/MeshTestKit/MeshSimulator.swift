/// What one of a node's actions means to the network.
public enum SimRoute<Datagram> {
    /// A datagram for the node with index `to`; one for an index that is no node's is lost on the way.
    case send(Datagram, to: Int)
    /// Something the node reports: kept in `MeshSimulator.events`.
    case event
    /// Nothing the simulator keeps.
    case ignore
}

/// A node as `MeshSimulator` runs it: a pure core (inputs with a monotonic `now` in, actions out) behind an
/// adapter that says which actions are datagrams. Nodes are numbered in the order they were added.
public protocol SimNode {
    associatedtype Datagram
    associatedtype Action

    mutating func receive(_ datagram: Datagram, from sender: Int, now: Int64) -> [Action]
    mutating func tick(now: Int64) -> [Action]
    /// When the node next needs a tick; nil for never.
    var nextDeadline: Int64? { get }
    func route(_ action: Action) -> SimRoute<Datagram>
}

/// When `MeshSimulator` ticks copies of nodes that are not due, to check that they do nothing.
public enum EarlyTickCheck: Sendable {
    case off
    /// Before every input a node takes, and a millisecond before every tick at its deadline.
    case everyInput
    /// Every node, every `ms` of virtual time from the start (as a shell ticking every core on that cadence would).
    case every(ms: Int64)
}

/// An undirected link between two nodes.
public struct SimLink: Hashable, Sendable {
    public let a: Int, b: Int
    public init(_ i: Int, _ j: Int) {
        a = min(i, j)
        b = max(i, j)
    }
}

/// How far apart two nodes are, one way, before jitter.
public enum SimLatency: Sendable {
    /// The same for every pair.
    case fixed(ms: Double)
    /// Every node gets random coordinates in the unit square: `minMs` + distance / √2 × `spanMs`.
    case coordinates(minMs: Double, spanMs: Double)
}

/// The deterministic discrete-event network every simulated test runs on (docs/architecture.md, "Simulator"):
/// nodes on one virtual clock, datagrams delayed by per-pair latency with jitter, lost at random (everywhere or
/// per link), across partitions, on cut links, outside the topology or to killed nodes, all drawn from one seeded
/// generator, so a run repeats exactly. Each node is ticked as the daemon ticks a core: one timer at its
/// `nextDeadline`, re-armed after every input.
///
/// `earlyTickCheck` checks the property the daemon relies on: a copy of a node ticked before its deadline must do
/// nothing. A node that does (with `.everyInput` also one whose timer fires after its deadline moved later and
/// finds it acting), or a node still due right after its tick, is a fault `takeEarlyTickFaults()` returns.
public struct MeshSimulator<Node: SimNode> {
    public struct Config: Sendable {
        public var seed: UInt64 = 1
        /// Virtual start time (Unix ms, so expiry behaves as on a real clock).
        public var startMs: Int64 = 1_700_000_000_000
        public var latency = SimLatency.fixed(ms: 0)
        /// A datagram's latency is the pair's times 1 + up to `jitter`, drawn per datagram.
        public var jitter = 0.0
        /// Whether jitter may deliver a datagram before one sent earlier from the same node to the same node; if
        /// not, it waits for it (a path keeps its order, as most do).
        public var reorders = false
        /// Chance that any datagram is lost.
        public var lossRate = 0.0
        public var earlyTickCheck = EarlyTickCheck.off
        /// Keep every datagram sent in `wire` (lost ones too).
        public var logsWire = false
        public init() {}
    }

    /// A non-datagram action, with the node and time it came from.
    public struct Event {
        public let node: Int
        public let timeMs: Int64
        public let action: Node.Action
        /// Its place among the actions the simulator carried out, datagrams sent included (`WireRecord.order`).
        public let order: Int
    }

    /// A datagram as it was sent, and whether it was lost on the way.
    public struct WireRecord {
        public let from: Int
        public let to: Int
        public let timeMs: Int64
        public let datagram: Node.Datagram
        /// Its place among the actions the simulator carried out, events included (`Event.order`).
        public let order: Int
        public fileprivate(set) var lost = false
    }

    /// Boxed, so sifting the heap moves a pointer rather than a datagram.
    private indirect enum Pending {
        /// `wire`: the datagram's index in `wire`, when it is kept.
        case deliver(to: Int, from: Int, Node.Datagram, wire: Int?)
        case tick(Int)
        /// `EarlyTickCheck.every`: every node is checked.
        case probe
    }

    public let config: Config
    public private(set) var nowMs: Int64
    public private(set) var nodes: [Node] = []
    /// The generator every random choice of the run comes from; scenarios draw from it too.
    public var rng: SplitMix64
    public var lossRate: Double
    /// The links datagrams can cross; nil for every pair.
    public var links: Set<SimLink>?
    /// Links that lose everything while both ends still think them up.
    public var cut: Set<SimLink> = []
    /// Links that lose each datagram with this probability (besides `lossRate`).
    public var linkLoss: [SimLink: Double] = [:]
    /// One-way latency of particular links, before jitter, instead of `config.latency`.
    public var linkLatencyMs: [SimLink: Double] = [:]
    /// Datagrams a scenario drops (by sender and receiver index).
    public var drop: ((Int, Int) -> Bool)?
    public private(set) var events: [Event] = []
    public private(set) var wire: [WireRecord] = []
    private var earlyTickFaults: [String] = []
    public private(set) var datagramsSent = 0
    public private(set) var datagramsLost = 0
    public private(set) var datagramsDelivered = 0

    private var queue = EventQueue<Pending>()
    /// Actions carried out so far (datagrams and events), for their `order`.
    private var actionsDone = 0
    /// Without `reorders`: when the last datagram sent from one node to another arrives, by `from << 32 | to`.
    private var lastArrivalMs: [Int: Int64] = [:]
    private var inFlight = 0
    private var alive: [Bool] = []
    private var listening: [Bool] = []
    private var coordinates: [(x: Double, y: Double)] = []
    private var group: [Int] = []
    private var partitioned = false
    private var scheduledTickMs: [Int64?] = []
    /// When each node last had an input: a probe must not take its clock back.
    private var lastInputMs: [Int64] = []
    private var lastTickMs: [Int64] = []

    public init(config: Config = Config()) {
        self.config = config
        nowMs = config.startMs
        lossRate = config.lossRate
        rng = SplitMix64(seed: config.seed)
        if case .every(let ms) = config.earlyTickCheck { queue.push(timeMs: nowMs + ms, .probe) }
    }

    // MARK: the network

    /// Adds a node (with coordinates drawn now, for the coordinates model); returns its index.
    @discardableResult
    public mutating func add(_ node: Node) -> Int {
        let index = nodes.count
        nodes.append(node)
        if case .coordinates = config.latency {
            coordinates.append((Double.random(in: 0..<1, using: &rng), Double.random(in: 0..<1, using: &rng)))
        }
        alive.append(true)
        listening.append(true)
        group.append(0)
        scheduledTickMs.append(nil)
        lastInputMs.append(nowMs)
        lastTickMs.append(.min)
        schedule(index)
        return index
    }

    /// A node as a scenario drives it directly: its tick is re-armed after the access.
    public subscript(node index: Int) -> Node {
        get { nodes[index] }
        _modify {
            lastInputMs[index] = nowMs
            yield &nodes[index]
            schedule(index)
        }
    }

    public func isAlive(_ index: Int) -> Bool { alive[index] }

    /// The node stops: it is not ticked and sends nothing more, and datagrams to it (in flight too) vanish.
    public mutating func kill(_ index: Int) { alive[index] = false }

    /// A killed node runs again, as it was.
    public mutating func revive(_ index: Int) {
        alive[index] = true
        scheduledTickMs[index] = nil
        schedule(index)
    }

    /// Whether datagrams reaching the node are taken in (false: a process that has not bound its port yet).
    public mutating func setListening(_ index: Int, _ on: Bool) { listening[index] = on }

    /// Moves the nodes listed to the groups given (the others stay where they are: all start in group 0);
    /// datagrams between groups are lost until `heal()`.
    public mutating func partition(_ groupOf: [Int: Int]) {
        for (index, g) in groupOf { group[index] = g }
        partitioned = true
    }

    public mutating func heal() { partitioned = false }

    /// The one-way latency between two nodes before jitter.
    public func baseLatencyMs(_ a: Int, _ b: Int) -> Double {
        if let fixed = linkLatencyMs[SimLink(a, b)] { return fixed }
        switch config.latency {
        case .fixed(let ms):
            return ms
        case .coordinates(let minMs, let spanMs):
            let dx = coordinates[a].x - coordinates[b].x, dy = coordinates[a].y - coordinates[b].y
            return minMs + (dx * dx + dy * dy).squareRoot() / 2.squareRoot() * spanMs
        }
    }

    // MARK: driving

    /// Carries out actions node `index` took at the current time: datagrams go on the network, events are kept.
    public mutating func perform(_ actions: [Node.Action], at index: Int) {
        for action in actions {
            switch nodes[index].route(action) {
            case .send(let datagram, let to):
                send(datagram, from: index, to: to)
            case .event:
                events.append(Event(node: index, timeMs: nowMs, action: action, order: actionsDone))
            case .ignore:
                break
            }
            actionsDone += 1
        }
        schedule(index)
    }

    /// Hands `datagram` to node `to` now, as if it came from `from` (any index, a node's or not), and carries out
    /// what the node does.
    public mutating func inject(_ datagram: Node.Datagram, from: Int, to: Int) {
        probeBeforeInput(to)
        lastInputMs[to] = nowMs
        let actions = nodes[to].receive(datagram, from: from, now: nowMs)
        perform(actions, at: to)
    }

    /// Runs every event up to and including `timeMs` (the clock ends there), or `maxEvents` of them (the clock
    /// stays at the last); whether every event due was run.
    @discardableResult
    public mutating func run(until timeMs: Int64, maxEvents: Int = .max) -> Bool {
        var left = maxEvents
        while left > 0, step(notAfter: timeMs) { left -= 1 }
        guard left > 0 || queue.first.map({ $0.timeMs > timeMs }) ?? true else { return false }
        nowMs = max(nowMs, timeMs)
        return true
    }

    public mutating func run(forMs duration: Int64) { run(until: nowMs + duration) }

    /// Runs until no datagram is in flight, for at most `limitMs`; whether the network went quiet. The clock
    /// stays at the last event.
    @discardableResult
    public mutating func runUntilQuiet(limitMs: Int64 = 600_000) -> Bool {
        let end = nowMs + limitMs
        while inFlight > 0 {
            guard step(notAfter: end) else { return false }
        }
        return true
    }

    /// The faults the early-tick check found since the last call.
    public mutating func takeEarlyTickFaults() -> [String] {
        defer { earlyTickFaults.removeAll() }
        return earlyTickFaults
    }

    /// The events kept so far, forgotten here.
    public mutating func takeEvents() -> [Event] {
        defer { events.removeAll() }
        return events
    }

    // MARK: internals

    /// Runs the next event if it is due by `timeMs`; whether there was one.
    private mutating func step(notAfter timeMs: Int64) -> Bool {
        guard let event = queue.popFirst(notAfter: timeMs) else { return false }
        nowMs = event.timeMs
        switch event.payload {
        case .deliver(let to, let from, let datagram, let record):
            inFlight -= 1
            guard alive[to], listening[to] else {
                if let record { wire[record].lost = true }
                return true
            }
            datagramsDelivered += 1
            probeBeforeInput(to)
            lastInputMs[to] = nowMs
            let actions = nodes[to].receive(datagram, from: from, now: nowMs)
            perform(actions, at: to)
        case .tick(let index):
            guard alive[index], scheduledTickMs[index] == event.timeMs else { return true }
            scheduledTickMs[index] = nil
            if case .everyInput = config.earlyTickCheck, lastInputMs[index] < nowMs - 1 {
                probe(index, at: nowMs - 1)
            }
            let due = nodes[index].nextDeadline
            lastInputMs[index] = nowMs
            lastTickMs[index] = nowMs
            let actions = nodes[index].tick(now: nowMs)
            if case .everyInput = config.earlyTickCheck, due.map({ $0 > nowMs }) ?? true, !actions.isEmpty {
                earlyTickFaults.append("node \(index) ticked at \(nowMs), before its deadline \(due.map(String.init) ?? "none"), acted")
            }
            if checksEarlyTicks, let again = nodes[index].nextDeadline, again <= nowMs {
                earlyTickFaults.append("node \(index) is still due at \(again) after its tick at \(nowMs)")
            }
            perform(actions, at: index)
        case .probe:
            for index in nodes.indices where alive[index] { probe(index, at: nowMs) }
            if case .every(let ms) = config.earlyTickCheck { queue.push(timeMs: nowMs + ms, .probe) }
        }
        return true
    }

    private mutating func send(_ datagram: Node.Datagram, from: Int, to: Int) {
        datagramsSent += 1
        let record = config.logsWire ? wire.count : nil
        if config.logsWire { wire.append(WireRecord(from: from, to: to, timeMs: nowMs, datagram: datagram, order: actionsDone)) }
        guard passes(from: from, to: to) else {
            if let record { wire[record].lost = true }
            return
        }
        var latency = baseLatencyMs(from, to)
        if config.jitter > 0 { latency *= 1 + config.jitter * Double.random(in: 0..<1, using: &rng) }
        var arrival = nowMs + Int64(latency.rounded())
        if !config.reorders {
            let path = from << 32 | to
            arrival = max(arrival, lastArrivalMs[path] ?? .min)
            lastArrivalMs[path] = arrival
        }
        inFlight += 1
        queue.push(timeMs: arrival, .deliver(to: to, from: from, datagram, wire: record))
    }

    /// Whether a datagram from `from` gets on its way to `to` (drawing the losses); counts the lost ones.
    private mutating func passes(from: Int, to: Int) -> Bool {
        guard alive[from], nodes.indices.contains(to) else { return false }
        let link = SimLink(from, to)
        let lost = if let links, !links.contains(link) {
            true
        } else if cut.contains(link) || drop?(from, to) == true {
            true
        } else if lossRate > 0, Double.random(in: 0..<1, using: &rng) < lossRate {
            true
        } else if partitioned, group[from] != group[to] {
            true
        } else if let loss = linkLoss[link] {
            Double.random(in: 0..<1, using: &rng) < loss
        } else {
            false
        }
        if lost { datagramsLost += 1 }
        return !lost
    }

    /// Arms the node's timer for its deadline, unless it is armed for then or earlier already.
    private mutating func schedule(_ index: Int) {
        guard alive[index], let due = nodes[index].nextDeadline else { return }
        if let scheduled = scheduledTickMs[index], scheduled <= due { return }
        // A node still due right after its tick would spin the daemon's timer; here it waits a millisecond.
        let time = max(due, lastTickMs[index] == nowMs ? nowMs + 1 : nowMs)
        scheduledTickMs[index] = time
        queue.push(timeMs: time, .tick(index))
    }

    private var checksEarlyTicks: Bool {
        if case .off = config.earlyTickCheck { false } else { true }
    }

    private mutating func probeBeforeInput(_ index: Int) {
        if case .everyInput = config.earlyTickCheck { probe(index, at: nowMs) }
    }

    /// A copy of the node ticked at `time`, before its deadline, must do nothing.
    private mutating func probe(_ index: Int, at time: Int64) {
        let due = nodes[index].nextDeadline
        guard due.map({ time < $0 }) ?? true else { return }
        var early = nodes[index]
        if !early.tick(now: time).isEmpty {
            earlyTickFaults.append("node \(index) ticked at \(time), before its deadline \(due.map(String.init) ?? "none"), acted")
        }
    }
}
