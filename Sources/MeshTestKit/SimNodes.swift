import MeshCall
import MeshDHT
import MeshIdentity
import MeshLink
import MeshRouting

// The cores as `MeshSimulator` nodes. A link manager's endpoint is a node index; the cores above the link layer
// address link neighbours by node address, which `peers` maps to indices.

/// Simulated endpoints are node indices; each is its own host for the rate limit.
extension Int: LinkEndpoint {
    public var cookieBytes: [UInt8] { withUnsafeBytes(of: self.bigEndian, Array.init) }
    public var rateLimitKey: [UInt8] { cookieBytes }
}

/// A `LinkManager` whose endpoint is its node index: every datagram is a link datagram.
public struct LinkNode: SimNode, Sendable {
    public var core: LinkManager<Int>

    public init(_ core: LinkManager<Int>) { self.core = core }

    public mutating func receive(_ datagram: [UInt8], from sender: Int, now: Int64) -> [LinkAction<Int>] {
        core.receive(datagram, from: sender, now: now)
    }

    public mutating func tick(now: Int64) -> [LinkAction<Int>] { core.tick(now: now) }
    public var nextDeadline: Int64? { core.nextDeadline }

    public func route(_ action: LinkAction<Int>) -> SimRoute<[UInt8]> {
        if case .send(let bytes, let to) = action { return .send(bytes, to: to) }
        return .event
    }
}

/// The node addresses of a simulated network by index, and back.
public struct SimDirectory: Sendable {
    public let addresses: [WalletAddress]
    private let indices: [WalletAddress: Int]

    public init(_ addresses: [WalletAddress]) {
        self.addresses = addresses
        indices = Dictionary(uniqueKeysWithValues: addresses.enumerated().map { ($1, $0) })
    }

    /// The node's index; -1 (no node: what is sent there is lost) for an address that is no node's.
    public func index(of address: WalletAddress) -> Int { indices[address] ?? -1 }
}

/// A `GossipEngine` whose messages travel as datagrams straight to the neighbour (no link layer).
public struct GossipNode: SimNode, Sendable {
    public var core: GossipEngine
    public let directory: SimDirectory

    public init(_ core: GossipEngine, directory: SimDirectory) {
        self.core = core
        self.directory = directory
    }

    public mutating func receive(_ datagram: [UInt8], from sender: Int, now: Int64) -> [GossipAction] {
        core.receive(datagram, from: directory.addresses[sender], nowMs: now)
    }

    public mutating func tick(now: Int64) -> [GossipAction] { core.tick(nowMs: now) }
    public var nextDeadline: Int64? { core.nextDeadline }

    public func route(_ action: GossipAction) -> SimRoute<[UInt8]> {
        switch action {
        case .send(let bytes, let to): .send(bytes, to: directory.index(of: to))
        }
    }
}

/// A `CallEngine` whose signalling travels as datagrams straight to the other node.
public struct CallNode: SimNode, Sendable {
    public var core: CallEngine
    public let directory: SimDirectory

    public init(_ core: CallEngine, directory: SimDirectory) {
        self.core = core
        self.directory = directory
    }

    public mutating func receive(_ datagram: [UInt8], from sender: Int, now: Int64) -> [CallAction] {
        core.receive(datagram, from: directory.addresses[sender], now: now)
    }

    public mutating func tick(now: Int64) -> [CallAction] { core.tick(now: now) }
    public var nextDeadline: Int64? { core.nextDeadline }

    public func route(_ action: CallAction) -> SimRoute<[UInt8]> {
        if case .send(let bytes, let to) = action { return .send(bytes, to: directory.index(of: to)) }
        return .event
    }
}

/// A `RelayEngine` whose chain messages travel as datagrams straight to the neighbour, with the routes the
/// scenario gives it.
public struct RelayNode<Routes: RelayRoutes & Sendable>: SimNode, Sendable {
    public var core: RelayEngine
    public var routes: Routes
    public let directory: SimDirectory

    public init(_ core: RelayEngine, routes: Routes, directory: SimDirectory) {
        self.core = core
        self.routes = routes
        self.directory = directory
    }

    public mutating func receive(_ datagram: [UInt8], from sender: Int, now: Int64) -> [RelayAction] {
        core.receive(datagram, from: directory.addresses[sender], routes: routes, now: now)
    }

    public mutating func tick(now: Int64) -> [RelayAction] { core.tick(routes: routes, now: now) }
    public var nextDeadline: Int64? { core.nextDeadline }

    public func route(_ action: RelayAction) -> SimRoute<[UInt8]> {
        if case .send(let bytes, let to) = action { return .send(bytes, to: directory.index(of: to)) }
        return .event
    }
}

/// A `WalletFinder` whose messages travel as datagrams straight to the neighbour, with the neighbours and the
/// host announcements (what gossip would know) the scenario gives it. It has no timers.
public struct FinderNode: SimNode, Sendable {
    public var core: WalletFinder
    public var neighbours: [WalletAddress] = []
    public var known: [WalletAddress: HostAnnouncement] = [:]
    public let directory: SimDirectory

    public init(_ core: WalletFinder, directory: SimDirectory) {
        self.core = core
        self.directory = directory
    }

    public mutating func receive(_ datagram: [UInt8], from sender: Int, now: Int64) -> [WalletFinder.Action] {
        let known = known
        return core.receive(datagram, from: directory.addresses[sender], neighbours: neighbours, known: { known[$0] }, now: now)
    }

    public mutating func tick(now: Int64) -> [WalletFinder.Action] { [] }
    public var nextDeadline: Int64? { nil }

    public func route(_ action: WalletFinder.Action) -> SimRoute<[UInt8]> {
        if case .send(let bytes, let to) = action { return .send(bytes, to: directory.index(of: to)) }
        return .event
    }
}

/// A `DHTNode` (the signed envelope around the protocol) listening at 10.0.0.(index + 1):4460, its monotonic clock
/// (the `nowMs` it is given) `offsetMs` off the network's.
public struct DHTEnvelopeNode: SimNode, Sendable {
    public var core: DHTNode
    public var offsetMs: Int64 = 0

    public init(_ core: DHTNode) { self.core = core }

    public static func endpoint(_ index: Int) -> DHTEndpoint { DHTEndpoint(ip: [10, 0, 0, UInt8(index + 1)], port: 4460)! }
    public static func index(_ endpoint: DHTEndpoint) -> Int? {
        endpoint.ip.count == 4 && endpoint.ip[0] == 10 ? Int(endpoint.ip[3]) - 1 : nil
    }

    public mutating func receive(_ datagram: [UInt8], from sender: Int, now: Int64) -> [DHTAction] {
        core.receive(datagram, from: Self.endpoint(sender), nowMs: now + offsetMs)
    }

    public mutating func tick(now: Int64) -> [DHTAction] { core.tick(nowMs: now + offsetMs) }
    public var nextDeadline: Int64? { core.nextDeadline.map { $0 - offsetMs } }

    public func route(_ action: DHTAction) -> SimRoute<[UInt8]> {
        if case .send(let bytes, let to) = action { return .send(bytes, to: Self.index(to) ?? -1) }
        return .event
    }
}
